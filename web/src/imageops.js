// Pixel operations of the pipeline, in plain JS, as OpenCV does them in fer_tf's Python code.
//
// An image is {width, height, channels, data}: `data` holds `channels` bytes per pixel, row-major
// (Uint8ClampedArray). RGB images come from a canvas' RGBA pixels (`fromImageData`), grey ones from
// `toGrey`. Resampling follows OpenCV's definitions (resize with half-pixel centres, INTER_AREA as
// pixel-area averaging, warpAffine on integer output coordinates with the border replicated); it
// computes in floating point where OpenCV uses fixed point, so a pixel may differ by one grey level.

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

/** Bilinear resize with half-pixel centres (cv2.INTER_LINEAR). */
export function resizeLinear(img, outW, outH) {
  const {width: w, height: h, channels: c, data: s} = img;
  const out = makeImage(outW, outH, c);
  const o = out.data;
  const sx = w / outW, sy = h / outH;
  const x0s = new Int32Array(outW), x1s = new Int32Array(outW), fxs = new Float32Array(outW);
  for (let x = 0; x < outW; x++) {
    let fx = (x + 0.5) * sx - 0.5;
    let ix = Math.floor(fx);
    fx -= ix;
    if (ix < 0) { ix = 0; fx = 0; }
    if (ix >= w - 1) { ix = w - 1; fx = 0; }
    x0s[x] = ix * c; x1s[x] = Math.min(ix + 1, w - 1) * c; fxs[x] = fx;
  }
  for (let y = 0; y < outH; y++) {
    let fy = (y + 0.5) * sy - 0.5;
    let iy = Math.floor(fy);
    fy -= iy;
    if (iy < 0) { iy = 0; fy = 0; }
    if (iy >= h - 1) { iy = h - 1; fy = 0; }
    const r0 = iy * w * c, r1 = Math.min(iy + 1, h - 1) * w * c;
    for (let x = 0; x < outW; x++) {
      const a = x0s[x], b = x1s[x], fx = fxs[x];
      for (let k = 0; k < c; k++) {
        const top = s[r0 + a + k] + (s[r0 + b + k] - s[r0 + a + k]) * fx;
        const bot = s[r1 + a + k] + (s[r1 + b + k] - s[r1 + a + k]) * fx;
        o[(y * outW + x) * c + k] = Math.round(top + (bot - top) * fy);
      }
    }
  }
  return out;
}

// OpenCV's pixel-area table along one axis: for each output index, [source index, weight] pairs.
function areaTable(srcLen, outLen, scale) {
  const table = [];
  for (let d = 0; d < outLen; d++) {
    const f1 = d * scale, f2 = f1 + scale;
    const cell = Math.min(scale, srcLen - f1);
    let s1 = Math.ceil(f1), s2 = Math.floor(f2);
    s2 = Math.min(s2, srcLen - 1);
    s1 = Math.min(s1, s2);
    const row = [];
    if (s1 - f1 > 1e-3) row.push([s1 - 1, (s1 - f1) / cell]);
    for (let s = s1; s < s2; s++) row.push([s, 1 / cell]);
    if (f2 - s2 > 1e-3) row.push([s2, Math.min(Math.min(f2 - s2, 1), cell) / cell]);
    table.push(row);
  }
  return table;
}

/** Shrink by pixel-area averaging (cv2.INTER_AREA, shrinking only). `scaleX`/`scaleY` are source
 *  pixels per output pixel (default: the ratio of the sizes, as cv2.resize with a size; pass
 *  1 / fx to mimic cv2.resize with fx). */
export function resizeArea(img, outW, outH, scaleX = img.width / outW, scaleY = img.height / outH, window = null) {
  const {width: w, height: h, channels: c, data: s} = img;
  if (scaleX < 1 || scaleY < 1) return resizeLinear(img, outW, outH);
  // `window` [x0, y0, x1, y1]: only those output pixels (the same values as the whole resize)
  const [wx0, wy0, wx1, wy1] = window || [0, 0, outW, outH];
  const xt = areaTable(w, outW, scaleX).slice(wx0, wx1), yt = areaTable(h, outH, scaleY).slice(wy0, wy1);
  const ow = wx1 - wx0, oh = wy1 - wy0;
  const out = makeImage(ow, oh, c);
  const o = out.data;
  const row = new Float64Array(ow * c);
  const acc = new Float64Array(ow * c);
  for (let y = 0; y < oh; y++) {
    acc.fill(0);
    for (const [sy, wy] of yt[y]) {
      row.fill(0);
      const base = sy * w * c;
      for (let x = 0; x < ow; x++) {
        for (const [sx, wx] of xt[x]) {
          const p = base + sx * c;
          for (let k = 0; k < c; k++) row[x * c + k] += s[p + k] * wx;
        }
      }
      for (let i = 0; i < acc.length; i++) acc[i] += row[i] * wy;
    }
    for (let i = 0; i < acc.length; i++) o[y * ow * c + i] = Math.round(acc[i]);
  }
  return out;
}

/** Resize: pixel-area averaging when shrinking, bilinear otherwise (as fer_tf picks). */
export function resize(img, outW, outH) {
  return outW < img.width && outH < img.height ? resizeArea(img, outW, outH) : resizeLinear(img, outW, outH);
}

/** Invert a 2x3 affine matrix [[a, b, c], [d, e, f]]. */
export function invertAffine(m) {
  const [[a, b, c], [d, e, f]] = m;
  const det = a * e - b * d;
  const ia = e / det, ib = -b / det, id = -d / det, ie = a / det;
  return [[ia, ib, -(ia * c + ib * f)], [id, ie, -(id * c + ie * f)]];
}

/** cv2.warpAffine(img, m, (outW, outH), INTER_LINEAR, BORDER_REPLICATE): `m` maps source pixels to
 *  output pixels (pass `inverse = true` when it maps output to source, as WARP_INVERSE_MAP). */
export function warpAffine(img, m, outW, outH, inverse = false) {
  const inv = inverse ? m : invertAffine(m);
  const {width: w, height: h, channels: c, data: s} = img;
  const out = makeImage(outW, outH, c);
  const o = out.data;
  const [[a, b, tx], [d, e, ty]] = inv;
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const fx = a * x + b * y + tx, fy = d * x + e * y + ty;
      const ix = Math.floor(fx), iy = Math.floor(fy);
      const ax = fx - ix, ay = fy - iy;
      const x0 = Math.min(Math.max(ix, 0), w - 1), x1 = Math.min(Math.max(ix + 1, 0), w - 1);
      const y0 = Math.min(Math.max(iy, 0), h - 1), y1 = Math.min(Math.max(iy + 1, 0), h - 1);
      const p00 = (y0 * w + x0) * c, p01 = (y0 * w + x1) * c, p10 = (y1 * w + x0) * c, p11 = (y1 * w + x1) * c;
      const q = (y * outW + x) * c;
      for (let k = 0; k < c; k++) {
        const top = s[p00 + k] + (s[p01 + k] - s[p00 + k]) * ax;
        const bot = s[p10 + k] + (s[p11 + k] - s[p10 + k]) * ax;
        o[q + k] = Math.round(top + (bot - top) * ay);
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
