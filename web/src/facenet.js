// MediaPipe's face networks in LiteRT.js: the BlazeFace short- and full-range detectors and the
// 468-point face mesh, with what MediaPipe's graphs do around them (fer_tf/preprocess/face_networks.py
// does the same in NumPy; the constants and steps below are that module's).

import {Tensor, loadAndCompile} from './vendor/litert/index.js';
import {resizeLinear, warpAffine} from './imageops.js';

export const NMS_IOU = 0.3;
export const LANDMARK_SIZE = 192;
export const ROI_SCALE = 1.5;
export const FACE_PRESENCE = 0.5;
export const PAD = -1.0; // the detectors' input outside the image: black on their [-1, 1] scale

export const DETECTORS = {
  short: {model: 'face_detection_short_range.tflite', size: 128, strides: [8, 16, 16, 16], anchorsPerLayer: 2},
  full: {model: 'face_detection_full_range_sparse.tflite', size: 192, strides: [4], anchorsPerLayer: 1},
};
export const LANDMARK_MODEL = 'face_landmark.tflite';
export const SCAN_TEMPLATE = 'face_detection_short_range.scan.json'; // web/build.py, scan_template

/** A compiled .tflite with one float32 input; `run` returns the outputs' Float32Arrays. */
export class Net {
  /** `model`: the .tflite's URL or its bytes (Uint8Array). */
  static async load(model, threads = 1) {
    const compiled = await loadAndCompile(model, {accelerator: 'wasm', cpuOptions: {numThreads: threads}});
    return new Net(compiled);
  }

  constructor(model) {
    this.model = model;
    this.inputShape = Array.from(model.getInputDetails()[0].shape, (v) => (v < 1 ? 1 : v)); // one at a time
    this.outputShapes = model.getOutputDetails().map((d) => Array.from(d.shape));
  }

  async run(data) {
    const input = new Tensor(data, this.inputShape);
    try {
      const outputs = await this.model.run(input);
      const arrays = outputs.map((t) => Float32Array.from(t.toTypedArray()));
      outputs.forEach((t) => t.delete());
      return arrays;
    } finally {
      input.delete();
    }
  }
}

/** Anchor centres [x0, y0, x1, y1, ...] in input pixels, in the order of the network's outputs. */
export function ssdAnchors(h, w, strides, perLayer) {
  const out = [];
  let i = 0;
  while (i < strides.length) {
    let j = i;
    while (j < strides.length && strides[j] === strides[i]) j++;
    const stride = strides[i], n = (j - i) * perLayer;
    const rows = Math.ceil(h / stride), cols = Math.ceil(w / stride);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        for (let k = 0; k < n; k++) out.push((c + 0.5) * stride, (r + 0.5) * stride);
      }
    }
    i = j;
  }
  return Float32Array.from(out);
}

function iou(a, b) { // corners (x0, y0, x1, y1)
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

/** Weighted non-maximum suppression of [{corners, keypoints, score}]: each kept box is the
 *  score-weighted mean of itself and the boxes overlapping it by more than `threshold`. */
export function weightedNms(found, threshold = NMS_IOU) {
  const order = found.slice().sort((a, b) => b.score - a.score);
  const alive = order.map(() => true);
  const out = [];
  for (let i = 0; i < order.length; i++) {
    if (!alive[i]) continue;
    const corners = [0, 0, 0, 0], keypoints = order[i].keypoints.map(() => [0, 0]);
    let total = 0;
    for (let j = i; j < order.length; j++) {
      if (!alive[j] || (j !== i && !(iou(order[i].corners, order[j].corners) > threshold))) continue;
      const w = order[j].score;
      total += w;
      for (let k = 0; k < 4; k++) corners[k] += order[j].corners[k] * w;
      order[j].keypoints.forEach((p, k) => { keypoints[k][0] += p[0] * w; keypoints[k][1] += p[1] * w; });
      alive[j] = false;
    }
    out.push({corners: corners.map((v) => v / total), keypoints: keypoints.map(([x, y]) => [x / total, y / total]),
      score: order[i].score});
  }
  return out;
}

/** Decode one detector run: [{box: [x, y, w, h], score, keypoints: [[x, y] x 6]}] in image pixels,
 *  best first, where input pixel = image pixel * k + (x0, y0). */
function decode(outputs, boxesIndex, anchors, minScore, x0 = 0, y0 = 0, k = 1) {
  const raw = outputs[boxesIndex], logits = outputs[1 - boxesIndex];
  const threshold = Math.log(minScore / (1 - minScore));
  const found = [];
  for (let i = 0; i < logits.length; i++) {
    if (!(logits[i] > threshold)) continue;
    const r = raw.subarray(i * 16, i * 16 + 16), ax = anchors[2 * i], ay = anchors[2 * i + 1];
    const cx = r[0] + ax, cy = r[1] + ay, hw = r[2] / 2, hh = r[3] / 2;
    const keypoints = [];
    for (let j = 0; j < 6; j++) keypoints.push([r[4 + 2 * j] + ax, r[5 + 2 * j] + ay]);
    const score = 1 / (1 + Math.exp(-Math.min(100, Math.max(-100, logits[i]))));
    found.push({corners: [cx - hw, cy - hh, cx + hw, cy + hh], keypoints, score});
  }
  return weightedNms(found).map(({corners: c, keypoints, score}) => ({
    box: [(c[0] - x0) / k, (c[1] - y0) / k, (c[2] - c[0]) / k, (c[3] - c[1]) / k],
    score,
    keypoints: keypoints.map(([x, y]) => [(x - x0) / k, (y - y0) / k]),
  }));
}

/** The outputs' order: boxes [1, K, 16] and scores [1, K, 1]. */
function boxesIndex(net) {
  const last = net.outputShapes.map((s) => s[s.length - 1]);
  return last[0] >= last[1] ? 0 : 1;
}

/** A detector's input of `rows` x `cols` pixels: `rgb` scaled to [-1, 1] with its top left at
 *  (x0, y0), PAD elsewhere. */
function inputTensor(rgb, rows, cols, x0 = 0, y0 = 0) {
  const tensor = new Float32Array(rows * cols * 3).fill(PAD);
  const {width: w, height: h, data: d} = rgb;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = (y * w + x) * 3, q = ((y + y0) * cols + x + x0) * 3;
      tensor[q] = d[p] * (2 / 255) - 1; tensor[q + 1] = d[p + 1] * (2 / 255) - 1; tensor[q + 2] = d[p + 2] * (2 / 255) - 1;
    }
  }
  return tensor;
}

/** One SSD detector run on an image letterboxed into its square input. */
class Detector {
  constructor(spec, net, minScore) {
    this.spec = spec; this.net = net; this.minScore = minScore;
    this.anchors = ssdAnchors(spec.size, spec.size, spec.strides, spec.anchorsPerLayer);
    this.boxesIndex = boxesIndex(net);
  }

  /** [{box: [x, y, w, h], score, keypoints: [[x, y] x 6]}] in pixels of `rgb`, best first. */
  async detect(rgb) {
    const s = this.spec.size;
    const {width: w, height: h} = rgb;
    const k = s / Math.max(h, w);
    const rw = Math.max(1, Math.round(w * k)), rh = Math.max(1, Math.round(h * k));
    const x0 = Math.floor((s - rw) / 2), y0 = Math.floor((s - rh) / 2);
    const resized = rw === w && rh === h ? rgb : resizeLinear(rgb, rw, rh);
    const outputs = await this.net.run(inputTensor(resized, s, s, x0, y0));
    return decode(outputs, this.boxesIndex, this.anchors, this.minScore, x0, y0, k);
  }
}

/** The short-range detector run at an image's own scale (face_networks._Detector.scan): its input
 *  is the image rounded up to a multiple of 16 pixels (padded with PAD at the right and bottom).
 *  LiteRT.js runs a network at the shapes written in its file only, so the network is compiled
 *  once per input shape from a copy of its bytes whose size-dependent dimensions are rewritten as
 *  the build's scan template says (web/build.py, scan_template); the last SCAN_SHAPES shapes are
 *  kept compiled. */
export class Scanner {
  static SCAN_SHAPES = 8;

  constructor(spec, bytes, template, minScore) {
    this.spec = spec; this.bytes = bytes; this.template = template; this.minScore = minScore;
    this.nets = new Map(); // "rows x cols" -> Promise<{net, anchors, boxesIndex}>
  }

  /** The network compiled for an input of `rows` x `cols` pixels (multiples of the unit). */
  netFor(rows, cols) {
    const key = `${rows}x${cols}`;
    let entry = this.nets.get(key);
    if (entry) {
      this.nets.delete(key); // most recently used last
    } else {
      const model = this.bytes.slice();
      const view = new DataView(model.buffer);
      const r = rows / this.template.unit, c = cols / this.template.unit;
      for (const [offset, c0, ch, cw, chw] of this.template.dims) view.setInt32(offset, c0 + ch * r + cw * c + chw * r * c, true);
      entry = Net.load(model).then((net) => ({net, anchors: ssdAnchors(rows, cols, this.spec.strides, this.spec.anchorsPerLayer),
        boxesIndex: boxesIndex(net)}));
      while (this.nets.size >= Scanner.SCAN_SHAPES) {
        const [oldest, old] = this.nets.entries().next().value;
        this.nets.delete(oldest);
        old.then(({net}) => net.model.delete(), () => {});
      }
    }
    this.nets.set(key, entry);
    return entry;
  }

  /** The network for an image of `width` x `height` pixels, compiled ahead of use. */
  async prepare(width, height) {
    const u = this.template.unit;
    await this.netFor(Math.ceil(height / u) * u, Math.ceil(width / u) * u);
  }

  /** [{box, score, keypoints}] in pixels of `rgb`, best first. */
  async scan(rgb) {
    const u = this.template.unit;
    const rows = Math.ceil(rgb.height / u) * u, cols = Math.ceil(rgb.width / u) * u;
    const {net, anchors, boxesIndex: bi} = await this.netFor(rows, cols);
    return decode(await net.run(inputTensor(rgb, rows, cols)), bi, anchors, this.minScore);
  }
}

/** The two detectors and the landmark network. */
export class FaceNetworks {
  static async load(modelsUrl, minDetectionConfidence = 0.5) {
    const fetched = (name, as) => fetch(modelsUrl + name).then((r) => {
      if (!r.ok) throw new Error(`models/${name}: HTTP ${r.status}`);
      return r[as]();
    });
    const [shortBytes, template] = await Promise.all([
      fetched(DETECTORS.short.model, 'arrayBuffer').then((b) => new Uint8Array(b)), fetched(SCAN_TEMPLATE, 'json')]);
    const [short, full, mesh] = await Promise.all([
      Net.load(shortBytes.slice()), Net.load(modelsUrl + DETECTORS.full.model), Net.load(modelsUrl + LANDMARK_MODEL)]);
    const scanner = new Scanner(DETECTORS.short, shortBytes, template, minDetectionConfidence);
    return new FaceNetworks(short, full, mesh, scanner, minDetectionConfidence);
  }

  constructor(short, full, mesh, scanner, minScore) {
    this.detectors = {short: new Detector(DETECTORS.short, short, minScore), full: new Detector(DETECTORS.full, full, minScore)};
    this.scanner = scanner;
    this.mesh = mesh;
    const sizes = mesh.outputShapes.map((s) => s.reduce((p, v) => p * v, 1));
    this.pointsIndex = sizes[0] >= sizes[1] ? 0 : 1;
    this.meshSize = mesh.inputShape[1];
  }

  /** 'short' and 'full': the detector on `rgb` letterboxed into its input; 'scan': the
   *  short-range detector at `rgb`'s own scale (Scanner). */
  detect(rgb, network = 'short') {
    return network === 'scan' ? this.scanner.scan(rgb) : this.detectors[network].detect(rgb);
  }

  /** [[x, y] x 468] landmarks (pixels of `rgb`) of the face that `detection` found, or null when
   *  the network says its region of interest holds no face. The region: the detection box's
   *  centre, a square of ROI_SCALE times its longer side, turned so that the eyes are level. */
  async landmarks(rgb, detection) {
    const [x, y, w, h] = detection.box;
    const cx = x + w / 2, cy = y + h / 2;
    const side = Math.max(w, h) * ROI_SCALE;
    const [[ex0, ey0], [ex1, ey1]] = detection.keypoints;
    const r = Math.atan2(ey1 - ey0, ex1 - ex0);
    const n = this.meshSize, k = side / n;
    const cos = Math.cos(r) * k, sin = Math.sin(r) * k;
    // crop pixel (u, v) -> image point (cx, cy) + R(r) k ((u, v) - n/2)
    const m = [[cos, -sin, cx - (cos - sin) * n / 2], [sin, cos, cy - (sin + cos) * n / 2]];
    const crop = warpAffine(rgb, m, n, n, true);
    const tensor = new Float32Array(n * n * 3);
    for (let i = 0; i < tensor.length; i++) tensor[i] = crop.data[i] / 255;
    const outputs = await this.mesh.run(tensor);
    const presence = outputs[1 - this.pointsIndex][0];
    if (1 / (1 + Math.exp(-presence)) < FACE_PRESENCE) return null;
    const p = outputs[this.pointsIndex], pts = [];
    for (let i = 0; i + 2 < p.length; i += 3) {
      pts.push([p[i] * m[0][0] + p[i + 1] * m[0][1] + m[0][2], p[i] * m[1][0] + p[i + 1] * m[1][1] + m[1][2]]);
    }
    return pts;
  }
}
