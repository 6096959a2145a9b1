// Face detection, landmarks and the aligned 60x60 grey crop: fer_tf's FaceAligner (engine "litert",
// fer_tf/preprocess/align.py) in JS. This file is the reference implementation of the crop for apps
// that run the networks themselves (README, "On a phone").
//
// Detection is the Python engine's: the short-range detector run at the image's own scale, at a
// few scales (FaceAligner._scan_boxes), then the second look and the landmarks; the whole-image
// passes (the short-range detector on the image fitted to its input, the full-range one on the
// image padded by half its size) only when the scan finds no face. What the Python engine does
// with MediaPipe's own graphs when no detector fires at all (the whole-image face mesh) is not
// done here: no face is reported then.

import {invertAffine, padReplicate, region, resizeArea, resizeCubic, resizeLinear, roundHalfEven, squareCrop, warpAffine} from './imageops.js';

// The crop (align.py): the aligned square's side is CROP_SCALE times the larger side of the
// eye-levelled landmarks' box, and the box's centre lies CROP_OFFSET of that side below its centre.
export const CROP_SCALE = 1.10;
export const CROP_OFFSET = 0.05;
export const CROP_SIZE = 60;
export const UPSCALE_BELOW = 160;
export const DETECT_MAX_SIDE = 1280;
export const WHOLE_MIN_RATIO = 0.2;
// The scan (align.py): level i scales the image so that its smallest face, minFace * SCAN_RANGE ** i,
// is SCAN_FACE pixels wide; level images larger than SCAN_TILE are scanned in overlapping tiles.
export const SCAN_FACE = 32.0;
export const SCAN_RANGE = 4.0;
export const SCAN_TILE = 1024;
export const SCAN_SMALLEST = 0.75;
export const SECOND_LOOK_SCORE = 0.7;
export const CONFIDENT_SCORE = 0.75;
export const LOOK_CROP = 256;
export const MIN_SIDE = 16;
export const MAX_ASPECT = 8.0;
export const MIN_FACE = 40;
// Mesh landmarks of the eye contours; "left" is the eye on the image's left.
export const EYE_ON_IMAGE_LEFT = [7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246];
export const EYE_ON_IMAGE_RIGHT = [249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466];

export function iou([ax, ay, aw, ah], [bx, by, bw, bh]) {
  const ix = Math.max(0, Math.min(ax + aw, bx + bw) - Math.max(ax, bx));
  const iy = Math.max(0, Math.min(ay + ah, by + bh) - Math.max(ay, by));
  const inter = ix * iy, union = aw * ah + bw * bh - inter;
  return union > 0 ? inter / union : 0;
}

function overlapSmall([ax, ay, aw, ah], [bx, by, bw, bh]) {
  const ix = Math.max(0, Math.min(ax + aw, bx + bw) - Math.max(ax, bx));
  const iy = Math.max(0, Math.min(ay + ah, by + bh) - Math.max(ay, by));
  const small = Math.min(aw * ah, bw * bh);
  return small > 0 ? ix * iy / small : 0;
}

/** Detections that overlap the image, after non-maximum suppression by score (align._suppress). */
function suppress(found, width, height) {
  const kept = [];
  found.filter(({box: [x, y, w, h]}) => w > 1 && h > 1 && x < width && y < height && x + w > 0 && y + h > 0)
    .sort((a, b) => b.score - a.score)
    .forEach((f) => {
      if (kept.every((k) => iou(f.box, k.box) < 0.3 && overlapSmall(f.box, k.box) < 0.6)) kept.push(f);
    });
  return kept;
}

/** A detection mapped by p / sx + dx (pixels of a scaled image -> pixels of the original). */
function moved(d, sx, sy = sx, dx = 0, dy = 0) {
  const [x, y, w, h] = d.box;
  return {box: [x / sx + dx, y / sy + dy, w / sx, h / sy], score: d.score,
    keypoints: d.keypoints.map(([px, py]) => [px / sx + dx, py / sy + dy])};
}

function tileStarts(length, side, stride) {
  if (length <= side) return [0];
  const n = Math.ceil((length - side) / Math.max(stride, 1)) + 1;
  const starts = new Set();
  for (let i = 0; i < n; i++) starts.add(roundHalfEven((length - side) * i / (n - 1)));
  return [...starts].sort((a, b) => a - b);
}

function mean(points, indices) {
  let x = 0, y = 0;
  for (const i of indices) { x += points[i][0]; y += points[i][1]; }
  return [x / indices.length, y / indices.length];
}

export class FaceAligner {
  /** `minFace`: smallest face (pixels) that the scan looks for; null: from a fifth of the image's
   *  longer side (as the live camera runs). */
  constructor(networks, {minFace = MIN_FACE, cropScale = CROP_SCALE, cropOffset = CROP_OFFSET} = {}) {
    this.nets = networks;
    this.minFace = minFace;
    this.cropScale = cropScale;
    this.cropOffset = cropOffset;
  }

  /** Every face in `rgb`, largest first: [{box, score, landmarks, leftEye, rightEye, angle}]
   *  (align.FaceAligner.detect, engine "litert"). */
  async detect(rgb, {minFace = this.minFace} = {}) {
    const {width: w, height: h} = rgb;
    if (Math.min(w, h) < MIN_SIDE || Math.max(w, h) / Math.min(w, h) > MAX_ASPECT) return [];
    // working scale of the whole-image passes and the mesh: upscale small images, downscale huge ones
    let f = 1;
    if (Math.min(w, h) < UPSCALE_BELOW) f = UPSCALE_BELOW / Math.min(w, h);
    else if (Math.max(w, h) > DETECT_MAX_SIDE) f = DETECT_MAX_SIDE / Math.max(w, h);
    const ww = Math.max(1, roundHalfEven(w * f)), wh = Math.max(1, roundHalfEven(h * f));
    const work = f === 1 ? rgb : (f > 1 ? resizeCubic(rgb, ww, wh) : resizeArea(rgb, ww, wh));
    const fx = work.width / w, fy = work.height / h;
    // landmarks on the upscaled image for small images (the mesh wants pixels), else on rgb
    const [meshSrc, mx, my] = f > 1 ? [work, fx, fy] : [rgb, 1, 1];
    let faces = await this.verify(suppress(await this.scanBoxes(rgb, minFace), w, h), meshSrc, mx, my);
    if (!faces.length) { // tight crops (faces that fill the photo) and faces cut by the border
      const py = Math.floor(work.height / 2), px = Math.floor(work.width / 2);
      const whole = await this.nets.detect(work, 'short');
      const cut = await this.nets.detect(padReplicate(work, px, py), 'full');
      const found = whole.concat(cut.map((d) => moved(d, 1, 1, -px, -py))).map((d) => moved(d, fx, fy));
      faces = await this.verify(suppress(found, w, h), meshSrc, mx, my);
    }
    return faces.map(({points, box, score}) => {
      const leftEye = mean(points, EYE_ON_IMAGE_LEFT), rightEye = mean(points, EYE_ON_IMAGE_RIGHT);
      const angle = Math.atan2(rightEye[1] - leftEye[1], rightEye[0] - leftEye[0]) * 180 / Math.PI;
      return {box, score, landmarks: points, leftEye, rightEye, angle};
    }).sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
  }

  /** The scan's levels (align.FaceAligner._scan_levels): [[smallest face, largest face, scale]],
   *  finest first, from minFace (else a fifth of the longer side) up to the longer side. */
  scanLevels(width, height, minFace) {
    const levels = [], top = Math.max(width, height);
    for (let lo = minFace || WHOLE_MIN_RATIO * top; lo < top; lo *= SCAN_RANGE) levels.push([lo, lo * SCAN_RANGE, SCAN_FACE / lo]);
    return levels;
  }

  /** Compile the scan's networks for images of `width` x `height` ahead of use (a video's first
   *  frames would otherwise wait for them). */
  async prepare(width, height, {minFace = this.minFace} = {}) {
    await Promise.all(this.scanLevels(width, height, minFace).map(([, , k]) => this.nets.scanner.prepare(
      Math.min(SCAN_TILE, Math.max(1, roundHalfEven(width * k))), Math.min(SCAN_TILE, Math.max(1, roundHalfEven(height * k))))));
  }

  /** The scan (align.FaceAligner._scan_boxes): the short-range detector at each level's scale, on
   *  tiles of SCAN_TILE that overlap by 1.2 times the level's largest face; a box wider than twice
   *  that or narrower than SCAN_SMALLEST * SCAN_FACE is dropped, and so is one that touches an
   *  inner tile edge (its face is whole in a neighbouring tile). */
  async scanBoxes(rgb, minFace) {
    const {width: w, height: h} = rgb;
    const found = [];
    for (const [, hi, k] of this.scanLevels(w, h, minFace)) {
      const lw = Math.max(1, roundHalfEven(w * k)), lh = Math.max(1, roundHalfEven(h * k));
      // bilinear down to half size (as MediaPipe resizes for its networks), area averaging below
      const level = k === 1 ? rgb : (k < 0.5 ? resizeArea(rgb, lw, lh) : resizeLinear(rgb, lw, lh));
      const largest = hi * k, side = SCAN_TILE, margin = 0.02 * side, smallest = SCAN_SMALLEST * SCAN_FACE;
      for (const y0 of tileStarts(level.height, side, side - 1.2 * largest)) {
        for (const x0 of tileStarts(level.width, side, side - 1.2 * largest)) {
          const tile = x0 === 0 && y0 === 0 && level.width <= side && level.height <= side
            ? level : region(level, x0, y0, x0 + side, y0 + side);
          for (const d of await this.nets.detect(tile, 'scan')) {
            const [bx, by, bw, bh] = d.box;
            if (bw > 2 * largest || bw < smallest) continue;
            if ((x0 > 0 && bx < margin) || (y0 > 0 && by < margin) ||
                (x0 + tile.width < level.width && bx + bw > tile.width - margin) ||
                (y0 + tile.height < level.height && by + bh > tile.height - margin)) continue;
            found.push(moved(moved(d, 1, 1, x0, y0), k));
          }
        }
      }
    }
    return found;
  }

  /** The detections that pass the second look and on which the mesh finds a face, largest first:
   *  [{points, box, score}] (align.FaceAligner._verify, litert engine). `src` is the image the
   *  mesh runs on; (mx, my) maps image pixels to `src` pixels. */
  async verify(found, src, mx, my) {
    const faces = [];
    for (const d of found.slice().sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3])) {
      const box = [d.box[0] * mx, d.box[1] * my, d.box[2] * mx, d.box[3] * my];
      let pts;
      if (d.score >= CONFIDENT_SCORE && d.keypoints) {
        pts = await this.landmarksAround(src, box, d.keypoints.map(([x, y]) => [x * mx, y * my]), d.score);
      } else {
        pts = await this.lookAndLandmarks(src, box);
      }
      if (!pts) continue;
      faces.push({points: pts.map(([x, y]) => [x / mx, y / my]), box: d.box, score: d.score});
    }
    return faces;
  }

  lookCrop(rgb, [x, y, bw, bh]) {
    const cx = x + bw / 2, cy = y + bh / 2;
    const {crop, scale: s} = squareCrop(rgb, cx, cy, Math.max(bw, bh) * 2, LOOK_CROP);
    return {crop, s, cx, cy, centre: [LOOK_CROP / 2 - bw * s / 2, LOOK_CROP / 2 - bh * s / 2, bw * s, bh * s]};
  }

  /** Second look: the short-range network sees the box again in a crop of twice its size; its
   *  detection there, when it scores at least SECOND_LOOK_SCORE, places the mesh. */
  async lookAndLandmarks(rgb, box) {
    const {crop, s, cx, cy, centre} = this.lookCrop(rgb, box);
    const seen = (await this.nets.detect(crop, 'short')).filter((d) => iou(d.box, centre) > 0.3);
    if (!seen.length) return null;
    const best = seen.reduce((a, b) => (b.score > a.score ? b : a));
    if (best.score < SECOND_LOOK_SCORE) return null;
    const pts = await this.nets.landmarks(crop, best);
    return pts && pts.map(([x, y]) => [(x - LOOK_CROP / 2) / s + cx, (y - LOOK_CROP / 2) / s + cy]);
  }

  /** Landmarks of a confident detection, placed by its own keypoints: on the image itself, or on
   *  the crop of twice the box when the network's input would shrink the face more than twofold. */
  async landmarksAround(rgb, box, keypoints, score) {
    if (Math.max(box[2], box[3]) * 1.5 <= 2 * 192) return this.nets.landmarks(rgb, {box, score, keypoints});
    const {crop, s, cx, cy, centre} = this.lookCrop(rgb, box);
    const seen = {box: centre, score, keypoints: keypoints.map(([x, y]) => [(x - cx) * s + LOOK_CROP / 2, (y - cy) * s + LOOK_CROP / 2])};
    const pts = await this.nets.landmarks(crop, seen);
    return pts && pts.map(([x, y]) => [(x - LOOK_CROP / 2) / s + cx, (y - LOOK_CROP / 2) / s + cy]);
  }

  /** The aligned crop of one face (align.FaceAligner._crop): `grey` rotated about the landmarks'
   *  centre so that the eye line is level, the square of cropScale times the larger side of the
   *  rotated landmarks' box, moved up by cropOffset of its side, resampled to size x size.
   *  Returns {image, angle, centre, side, landmarks (in the crop)}. */
  crop(grey, face, size = CROP_SIZE) {
    const pts = face.landmarks;
    let cx0 = 0, cy0 = 0;
    for (const [x, y] of pts) { cx0 += x; cy0 += y; }
    cx0 /= pts.length; cy0 /= pts.length;
    // cv2.getRotationMatrix2D((cx0, cy0), angle, 1)
    const t = face.angle * Math.PI / 180, a = Math.cos(t), b = Math.sin(t);
    const rot = [[a, b, (1 - a) * cx0 - b * cy0], [-b, a, b * cx0 + (1 - a) * cy0]];
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const [x, y] of pts) {
      const rx = rot[0][0] * x + rot[0][1] * y + rot[0][2], ry = rot[1][0] * x + rot[1][1] * y + rot[1][2];
      x0 = Math.min(x0, rx); x1 = Math.max(x1, rx); y0 = Math.min(y0, ry); y1 = Math.max(y1, ry);
    }
    const side = Math.max(Math.max(x1 - x0, y1 - y0) * this.cropScale, 2);
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2 - this.cropOffset * side;
    const s = size / side;
    // full = T(scale s, move (cx, cy) to the centre) o rot
    const full = [
      [s * rot[0][0], s * rot[0][1], s * rot[0][2] + size / 2 - s * cx],
      [s * rot[1][0], s * rot[1][1], s * rot[1][2] + size / 2 - s * cy]];
    let pre = 1;
    if (s < 0.5) pre = Math.min(1, 2 * s); // shrink first by area averaging, then warp at about twice the output size
    // m = full o (shrunk -> original): shrunk-image pixels -> crop pixels
    const m = [[full[0][0] / pre, full[0][1] / pre, full[0][2]], [full[1][0] / pre, full[1][1] / pre, full[1][2]]];
    // only the part of the (shrunk) grey image that the crop samples is computed: the crop's
    // corners mapped back, with a margin for the interpolation (the same pixels as the whole)
    const inv = invertAffine(m);
    const xs = [], ys = [];
    for (const [u, v] of [[0, 0], [size, 0], [0, size], [size, size]]) {
      xs.push(inv[0][0] * u + inv[0][1] * v + inv[0][2]); ys.push(inv[1][0] * u + inv[1][1] * v + inv[1][2]);
    }
    const sw = pre === 1 ? grey.width : Math.round(grey.width * pre), sh = pre === 1 ? grey.height : Math.round(grey.height * pre);
    const wx0 = Math.max(0, Math.min(sw - 1, Math.floor(Math.min(...xs)) - 2)), wy0 = Math.max(0, Math.min(sh - 1, Math.floor(Math.min(...ys)) - 2));
    const wx1 = Math.max(wx0 + 1, Math.min(sw, Math.ceil(Math.max(...xs)) + 3)), wy1 = Math.max(wy0 + 1, Math.min(sh, Math.ceil(Math.max(...ys)) + 3));
    const src = pre === 1 ? region(grey, wx0, wy0, wx1, wy1)
      : resizeArea(grey, sw, sh, 1 / pre, 1 / pre, [wx0, wy0, wx1, wy1]);
    const image = warpAffine(src, [[m[0][0], m[0][1], m[0][2] + m[0][0] * wx0 + m[0][1] * wy0],
      [m[1][0], m[1][1], m[1][2] + m[1][0] * wx0 + m[1][1] * wy0]], size, size);
    const landmarks = pts.map(([x, y]) => [full[0][0] * x + full[0][1] * y + full[0][2], full[1][0] * x + full[1][1] * y + full[1][2]]);
    // the crop's centre in the original image: the inverse rotation of (cx, cy)
    const centre = [a * (cx - rot[0][2]) - b * (cy - rot[1][2]), b * (cx - rot[0][2]) + a * (cy - rot[1][2])];
    return {image, angle: face.angle, centre, side, landmarks};
  }
}
