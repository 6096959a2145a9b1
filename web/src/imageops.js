// Pixel operations of the pipeline, in plain JS, as OpenCV does them in fer_tf's Python code.
//
// An image is {width, height, channels, data}: `data` holds `channels` bytes per pixel, row-major
// (Uint8ClampedArray). RGB images come from a canvas' RGBA pixels (`fromImageData`), grey ones from
// `toGrey`. Resampling follows OpenCV's definitions (resize with half-pixel centres, INTER_AREA as
// pixel-area averaging, warpAffine on integer output coordinates with the border replicated), in
// OpenCV's own fixed point and rounding for 8-bit images where it has them (INTER_LINEAR,
// warpAffine, halving): the same bytes as cv2 (tests/test_web.py compares); area averaging and
// cubic sums may differ from OpenCV's float32 sums by one grey level in a few pixels of 10,000.

export function makeImage(width, height, channels) {
  return {width, height, channels, data: new Uint8ClampedArray(width * height * channels)};
}

/** RGB image of a canvas ImageData; transparent pixels are composited on white (as fer_tf does). */
export function fromImageData(imageData) {
  const {width, height, data} = imageData;
  const out = makeImage(width, height, 3);
  const o = out.data;
  for (let i = 0, j = 0; i < data.length; i += 4, j += 3) {
    const a = data[i + 3];
    if (a === 255) {
      o[j] = data[i]; o[j + 1] = data[i + 1]; o[j + 2] = data[i + 2];
    } else {
      const k = a / 255;
      o[j] = data[i] * k + 255 * (1 - k);
      o[j + 1] = data[i + 1] * k + 255 * (1 - k);
      o[j + 2] = data[i + 2] * k + 255 * (1 - k);
    }
  }
  return out;
}

/** Grey image: ITU-R 601-2 luma, rounded (as PIL's convert("L") and fer_tf's as_uint8_image). */
export function toGrey(rgb) {
  const out = makeImage(rgb.width, rgb.height, 1);
  const s = rgb.data, o = out.data;
  for (let i = 0, j = 0; j < o.length; i += 3, j++) {
    o[j] = Math.round(0.299 * s[i] + 0.587 * s[i + 1] + 0.114 * s[i + 2]);
  }
  return out;
}

// cv2.resize's source position of output index d, half-pixel centres: [integer part, fraction] (float32).
function sourcePosition(d, scale) {
  const f = Math.fround((d + 0.5) * scale - 0.5), s = Math.floor(f);
  return [s, Math.fround(f - s)];
}

// cv2.INTER_LINEAR's table along one axis: each output index's first source index and its two
// weights in 11-bit fixed point (2048 = 1). Columns are clamped to the image (OpenCV moves the
// position inside); rows are not (OpenCV clamps the rows it reads instead).
function linearTable(srcLen, outLen, clamp) {
  const scale = srcLen / outLen;
  const index = new Int32Array(outLen), weight = new Int32Array(outLen * 2);
  for (let d = 0; d < outLen; d++) {
    let [s, f] = sourcePosition(d, scale);
    if (clamp && s < 0) { s = 0; f = 0; }
    if (clamp && s >= srcLen - 1) { s = srcLen - 1; f = 0; }
    index[d] = s;
    weight[2 * d] = roundHalfEven(Math.fround(1 - f) * 2048);
    weight[2 * d + 1] = roundHalfEven(f * 2048);
  }
  return {index, weight};
}

/** Bilinear resize with half-pixel centres (cv2.INTER_LINEAR on 8-bit images), in OpenCV's fixed
 *  point and rounding, to the same bytes (tests/test_web.py compares); halving is OpenCV's pixel
 *  averaging, as cv2.resize does it. */
export function resizeLinear(img, outW, outH) {
  const {width: w, height: h, channels: c, data: s} = img;
  if (w === 2 * outW && h === 2 * outH) return blockMean(img, 2, 2, 0, 0, outW, outH);
  const xt = linearTable(w, outW, true), yt = linearTable(h, outH, false);
  const n = outW * c;
  const rows = new Int32Array(h * n); // every source row interpolated along x, 2048 = 1
  for (let y = 0; y < h; y++) {
    const base = y * w * c, rb = y * n;
    for (let x = 0; x < outW; x++) {
      const p0 = base + xt.index[x] * c, p1 = base + Math.min(xt.index[x] + 1, w - 1) * c;
      const a0 = xt.weight[2 * x], a1 = xt.weight[2 * x + 1];
      for (let k = 0; k < c; k++) rows[rb + x * c + k] = s[p0 + k] * a0 + s[p1 + k] * a1;
    }
  }
  const out = makeImage(outW, outH, c);
  const o = out.data;
  for (let y = 0; y < outH; y++) {
    const iy = yt.index[y];
    const r0 = Math.min(Math.max(iy, 0), h - 1) * n, r1 = Math.min(Math.max(iy + 1, 0), h - 1) * n;
    const b0 = yt.weight[2 * y], b1 = yt.weight[2 * y + 1];
    // OpenCV's vectorised rounding: each term to 16 bits, then the sum to 8
    for (let j = 0; j < n; j++) o[y * n + j] = (((b0 * (rows[r0 + j] >> 4)) >> 16) + ((b1 * (rows[r1 + j] >> 4)) >> 16) + 2) >> 2;
  }
  return out;
}

// cv2.INTER_CUBIC's weights of the four source pixels around a fractional offset x (A = -0.75).
function cubicWeights(x) {
  const A = -0.75;
  const w0 = Math.fround(((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A);
  const w1 = Math.fround(((A + 2) * x - (A + 3)) * x * x + 1);
  const w2 = Math.fround(((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1);
  return [w0, w1, w2, Math.fround(1 - w0 - w1 - w2)];
}

// For each output index along one axis: the first of its four source indices and their weights,
// as cv2.resize computes them (in float32).
function cubicTable(srcLen, outLen) {
  const scale = srcLen / outLen;
  const starts = new Int32Array(outLen), weights = new Float32Array(outLen * 4);
  for (let d = 0; d < outLen; d++) {
    const [s, f] = sourcePosition(d, scale);
    starts[d] = s - 1;
    weights.set(cubicWeights(f), d * 4);
  }
  return {starts, weights};
}

/** Round half to even, as Python's round() and OpenCV's cvRound. */
export function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Bicubic resize (cv2.INTER_CUBIC, A = -0.75): half-pixel centres, the border replicated, the
 *  rows then the columns interpolated in float32 and rounded, as OpenCV does for 8-bit images
 *  (tests/test_web.py: the same bytes as cv2.resize but for a few pixels in 100,000, off by one). */
export function resizeCubic(img, outW, outH) {
  const {width: w, height: h, channels: c, data: s} = img;
  const out = makeImage(outW, outH, c);
  const o = out.data;
  const xt = cubicTable(w, outW), yt = cubicTable(h, outH);
  const clampX = new Int32Array(outW * 4);
  for (let x = 0; x < outW; x++) {
    for (let k = 0; k < 4; k++) clampX[x * 4 + k] = Math.min(Math.max(xt.starts[x] + k, 0), w - 1) * c;
  }
  const rows = new Float32Array(h * outW * c); // every source row, interpolated along x
  const a = xt.weights;
  for (let y = 0; y < h; y++) {
    const base = y * w * c, rb = y * outW * c;
    for (let x = 0; x < outW; x++) {
      const i = x * 4;
      for (let k = 0; k < c; k++) {
        rows[rb + x * c + k] = s[base + clampX[i] + k] * a[i] + s[base + clampX[i + 1] + k] * a[i + 1] +
          s[base + clampX[i + 2] + k] * a[i + 2] + s[base + clampX[i + 3] + k] * a[i + 3];
      }
    }
  }
  const n = outW * c, b = yt.weights;
  for (let y = 0; y < outH; y++) {
    const i = y * 4, r = [0, 1, 2, 3].map((k) => Math.min(Math.max(yt.starts[y] + k, 0), h - 1) * n);
    for (let j = 0; j < n; j++) {
      const v = Math.fround(rows[r[0] + j] * b[i] + rows[r[1] + j] * b[i + 1] + rows[r[2] + j] * b[i + 2] + rows[r[3] + j] * b[i + 3]);
      o[y * n + j] = roundHalfEven(v); // the Uint8ClampedArray saturates
    }
  }
  return out;
}

// OpenCV's pixel-area table along one axis: output index d takes the source indices
// index[start[d]] .. index[start[d + 1] - 1] with those weights.
function areaTable(srcLen, outLen, scale) {
  const start = new Int32Array(outLen + 1), index = [], weight = [];
  for (let d = 0; d < outLen; d++) {
    const f1 = d * scale, f2 = f1 + scale;
    const cell = Math.min(scale, srcLen - f1);
    let s1 = Math.ceil(f1), s2 = Math.floor(f2);
    s2 = Math.min(s2, srcLen - 1);
    s1 = Math.min(s1, s2);
    if (s1 - f1 > 1e-3) { index.push(s1 - 1); weight.push((s1 - f1) / cell); }
    for (let s = s1; s < s2; s++) { index.push(s); weight.push(1 / cell); }
    if (f2 - s2 > 1e-3) { index.push(s2); weight.push(Math.min(Math.min(f2 - s2, 1), cell) / cell); }
    start[d + 1] = index.length;
  }
  return {start, index: Int32Array.from(index), weight: Float64Array.from(weight)};
}

// resizeArea by a whole factor (OpenCV's fast path): each output pixel is the mean of its block.
function blockMean(img, fx, fy, wx0, wy0, wx1, wy1) {
  const {width: w, channels: c, data: s} = img;
  const ow = wx1 - wx0, oh = wy1 - wy0, n = ow * c, inv = 1 / (fx * fy);
  const out = makeImage(ow, oh, c);
  const acc = new Int32Array(n);
  for (let y = 0; y < oh; y++) {
    acc.fill(0);
    for (let sy = (wy0 + y) * fy, end = sy + fy; sy < end; sy++) {
      let p = (sy * w + wx0 * fx) * c;
      if (c === 3) {
        for (let q = 0; q < n; q += 3) {
          let r = 0, g = 0, b = 0;
          for (let j = 0; j < fx; j++, p += 3) { r += s[p]; g += s[p + 1]; b += s[p + 2]; }
          acc[q] += r; acc[q + 1] += g; acc[q + 2] += b;
        }
      } else {
        for (let q = 0; q < n; q += c) {
          for (let j = 0; j < fx; j++) {
            for (let k = 0; k < c; k++) acc[q + k] += s[p++];
          }
        }
      }
    }
    // OpenCV rounds halves up when halving (its vectorised path), to even otherwise
    if (fx === 2 && fy === 2) for (let i = 0; i < n; i++) out.data[y * n + i] = (acc[i] + 2) >> 2;
    else for (let i = 0; i < n; i++) out.data[y * n + i] = roundHalfEven(acc[i] * inv);
  }
  return out;
}

/** Shrink by pixel-area averaging (cv2.INTER_AREA, shrinking only). `scaleX`/`scaleY` are source
 *  pixels per output pixel (default: the ratio of the sizes, as cv2.resize with a size; pass
 *  1 / fx to mimic cv2.resize with fx). */
export function resizeArea(img, outW, outH, scaleX = img.width / outW, scaleY = img.height / outH, window = null) {
  const {width: w, height: h, channels: c, data: s} = img;
  if (scaleX < 1 || scaleY < 1) return resizeLinear(img, outW, outH);
  // `window` [x0, y0, x1, y1]: only those output pixels (the same values as the whole resize)
  const [wx0, wy0, wx1, wy1] = window || [0, 0, outW, outH];
  if (Number.isInteger(scaleX) && Number.isInteger(scaleY) && w === outW * scaleX && h === outH * scaleY) {
    return blockMean(img, scaleX, scaleY, wx0, wy0, wx1, wy1);
  }
  const xt = areaTable(w, outW, scaleX), yt = areaTable(h, outH, scaleY);
  const ow = wx1 - wx0, oh = wy1 - wy0;
  const out = makeImage(ow, oh, c);
  const o = out.data;
  // per output column, its source offsets (times the channels) and weights, flat
  const n0 = xt.start[wx0], xs = xt.start.subarray(wx0, wx1 + 1);
  const xi = xt.index.subarray(n0, xs[ow]).map((v) => v * c), xw = xt.weight.subarray(n0, xs[ow]);
  const acc = new Float64Array(ow * c);
  for (let y = 0; y < oh; y++) {
    acc.fill(0);
    for (let e = yt.start[wy0 + y]; e < yt.start[wy0 + y + 1]; e++) {
      const base = yt.index[e] * w * c, wy = yt.weight[e];
      if (c === 3) {
        for (let x = 0, q = 0; x < ow; x++, q += 3) {
          let r = 0, g = 0, b = 0;
          for (let j = xs[x] - n0, end = xs[x + 1] - n0; j < end; j++) {
            const p = base + xi[j], wx = xw[j];
            r += s[p] * wx; g += s[p + 1] * wx; b += s[p + 2] * wx;
          }
          acc[q] += r * wy; acc[q + 1] += g * wy; acc[q + 2] += b * wy;
        }
      } else {
        for (let x = 0; x < ow; x++) {
          for (let k = 0; k < c; k++) {
            let v = 0;
            for (let j = xs[x] - n0, end = xs[x + 1] - n0; j < end; j++) v += s[base + xi[j] + k] * xw[j];
            acc[x * c + k] += v * wy;
          }
        }
      }
    }
    const row = y * ow * c;
    for (let i = 0; i < acc.length; i++) o[row + i] = Math.round(acc[i]);
  }
  return out;
}

/** Invert a 2x3 affine matrix [[a, b, c], [d, e, f]] (as cv2.invertAffineTransform computes it). */
export function invertAffine(m) {
  const [[a, b, c], [d, e, f]] = m;
  let det = a * e - b * d;
  det = det !== 0 ? 1 / det : 0;
  const ia = e * det, ib = -b * det, id = -d * det, ie = a * det;
  return [[ia, ib, -ia * c - ib * f], [id, ie, -id * c - ie * f]];
}

/** cv2.warpAffine(img, m, (outW, outH), INTER_LINEAR, BORDER_REPLICATE): `m` maps source pixels to
 *  output pixels (pass `inverse = true` when it maps output to source, as WARP_INVERSE_MAP). In
 *  OpenCV's fixed point, to the same bytes: source positions in 1/1024 pixel, rounded to 1/32, and
 *  the bilinear weights of that 1/32 grid in 1/32768 (tests/test_web.py compares). */
export function warpAffine(img, m, outW, outH, inverse = false) {
  const inv = inverse ? m : invertAffine(m);
  const {width: w, height: h, channels: c, data: s} = img;
  const out = makeImage(outW, outH, c);
  const o = out.data;
  const [[a, b, tx], [d, e, ty]] = inv;
  const adelta = new Int32Array(outW), bdelta = new Int32Array(outW);
  for (let x = 0; x < outW; x++) { adelta[x] = roundHalfEven(a * x * 1024); bdelta[x] = roundHalfEven(d * x * 1024); }
  for (let y = 0; y < outH; y++) {
    const X0 = roundHalfEven((b * y + tx) * 1024) + 16, Y0 = roundHalfEven((e * y + ty) * 1024) + 16;
    for (let x = 0; x < outW; x++) {
      const X = (X0 + adelta[x]) >> 5, Y = (Y0 + bdelta[x]) >> 5;
      const ix = X >> 5, iy = Y >> 5, ax = X & 31, ay = Y & 31;
      const w00 = (32 - ax) * (32 - ay) * 32, w01 = ax * (32 - ay) * 32, w10 = (32 - ax) * ay * 32, w11 = ax * ay * 32;
      const x0 = Math.min(Math.max(ix, 0), w - 1), x1 = Math.min(Math.max(ix + 1, 0), w - 1);
      const y0 = Math.min(Math.max(iy, 0), h - 1), y1 = Math.min(Math.max(iy + 1, 0), h - 1);
      const p00 = (y0 * w + x0) * c, p01 = (y0 * w + x1) * c, p10 = (y1 * w + x0) * c, p11 = (y1 * w + x1) * c;
      const q = (y * outW + x) * c;
      for (let k = 0; k < c; k++) {
        o[q + k] = (s[p00 + k] * w00 + s[p01 + k] * w01 + s[p10 + k] * w10 + s[p11 + k] * w11 + 16384) >> 15;
      }
    }
  }
  return out;
}

/** The rectangle [x0, x1) x [y0, y1) of an image (clipped to it). */
export function region(img, x0, y0, x1, y1) {
  x0 = Math.max(0, Math.min(img.width - 1, x0)); y0 = Math.max(0, Math.min(img.height - 1, y0));
  x1 = Math.max(x0 + 1, Math.min(img.width, x1)); y1 = Math.max(y0 + 1, Math.min(img.height, y1));
  const c = img.channels, out = makeImage(x1 - x0, y1 - y0, c);
  for (let y = y0; y < y1; y++) {
    out.data.set(img.data.subarray((y * img.width + x0) * c, (y * img.width + x1) * c), (y - y0) * out.width * c);
  }
  return out;
}

/** Pad by (px, py) on every side, replicating the border (cv2.copyMakeBorder BORDER_REPLICATE). */
export function padReplicate(img, px, py) {
  const {width: w, height: h, channels: c, data: s} = img;
  const out = makeImage(w + 2 * px, h + 2 * py, c);
  for (let y = 0; y < out.height; y++) {
    const sy = Math.min(Math.max(y - py, 0), h - 1);
    for (let x = 0; x < out.width; x++) {
      const sx = Math.min(Math.max(x - px, 0), w - 1);
      for (let k = 0; k < c; k++) out.data[(y * out.width + x) * c + k] = s[(sy * w + sx) * c + k];
    }
  }
  return out;
}

/** The square of `side` pixels centred on (cx, cy), resampled to `out` x `out` (fer_tf's
 *  align._square_crop): only the square's region is resampled; shrinking by more than two is done
 *  by area averaging first. Returns {crop, scale} with scale = out / side. */
export function squareCrop(rgb, cx, cy, side, out) {
  const s = out / side;
  const {width: w, height: h} = rgb;
  const x0 = Math.min(Math.max(0, Math.floor(cx - side / 2) - 1), w - 1);
  const y0 = Math.min(Math.max(0, Math.floor(cy - side / 2) - 1), h - 1);
  const x1 = Math.max(Math.min(w, Math.ceil(cx + side / 2) + 2), x0 + 1);
  const y1 = Math.max(Math.min(h, Math.ceil(cy + side / 2) + 2), y0 + 1);
  let src = region(rgb, x0, y0, x1, y1);
  const m = [[s, 0, out / 2 - s * (cx - x0)], [0, s, out / 2 - s * (cy - y0)]];
  if (s < 0.5) {
    const rw = src.width, rh = src.height;
    src = resizeArea(src, Math.max(1, Math.round(rw * 2 * s)), Math.max(1, Math.round(rh * 2 * s)));
    m[0][0] *= rw / src.width;
    m[1][1] *= rh / src.height;
  }
  return {crop: warpAffine(src, m, out, out), scale: s};
}
