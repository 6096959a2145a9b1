// The whole pipeline: faces, aligned crops, expressions. Results have the fields of
// `fer-tf predict --json`: box (integer x, y, width, height), expression, probabilities.

import {loadLiteRt} from './vendor/litert/index.js';
import {FaceNetworks, Net} from './facenet.js';
import {FaceAligner, CROP_SIZE} from './aligner.js';
import {toGrey} from './imageops.js';

/** The box as fer_tf.preprocess.boxes.int_box: rounded corners, clipped to the image. */
export function intBox([x, y, w, h], width, height) {
  const x0 = Math.max(0, Math.round(x)), y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(width, Math.round(x + w)), y1 = Math.min(height, Math.round(y + h));
  return [x0, y0, Math.max(0, x1 - x0), Math.max(0, y1 - y0)];
}

export class Recognizer {
  /** Loads LiteRT.js (WASM) from `base`/vendor/litert/wasm/ and the networks from `base`/models/. */
  static async load(base = new URL('./', import.meta.url).href) {
    // The runtime writes its INFO and WARNING log lines to stderr, which Emscripten sends to
    // console.error: keep them as debug messages, and only its errors as errors.
    self.Module = {print: (line) => console.debug(line),
      printErr: (line) => (/^(INFO|WARNING): /.test(line) ? console.debug(line) : console.error(line))};
    await loadLiteRt(base + 'vendor/litert/wasm/');
    const models = base + 'models/';
    const sidecar = await fetch(models + 'fer_tf_basic7.json').then((r) => {
      if (!r.ok) throw new Error(`models/fer_tf_basic7.json: HTTP ${r.status}`);
      return r.json();
    });
    const [networks, classifier] = await Promise.all([FaceNetworks.load(models), Net.load(models + 'fer_tf_basic7.tflite')]);
    return new Recognizer(networks, classifier, sidecar);
  }

  constructor(networks, classifier, sidecar) {
    this.networks = networks;
    this.classifier = classifier;
    this.labels = sidecar.labels;
    this.inputSize = sidecar.input.shape[0];
    if (this.inputSize !== CROP_SIZE) throw new Error(`the classifier wants ${this.inputSize}px crops, the aligner makes ${CROP_SIZE}px`);
    this.aligner = new FaceAligner(networks);
  }

  /** Probabilities of one aligned grey crop (raw pixels 0..255: the model normalises them itself). */
  async classify(crop) {
    const input = Float32Array.from(crop.data);
    const [probs] = await this.classifier.run(input);
    return probs;
  }

  /** Every face in `rgb` (an imageops RGB image), largest first. `details` adds the landmarks,
   *  eyes, eye-line angle and crop of each face. Returns {faces, timing: {detection, alignment,
   *  classification} in ms}. */
  async analyse(rgb, {minFace, details = false} = {}) {
    const t0 = performance.now();
    const found = await this.aligner.detect(rgb, minFace === undefined ? {} : {minFace});
    const t1 = performance.now();
    const grey = found.length ? toGrey(rgb) : null;
    const crops = found.map((face) => this.aligner.crop(grey, face));
    const t2 = performance.now();
    const faces = [];
    for (let i = 0; i < found.length; i++) {
      const probs = await this.classify(crops[i].image);
      let best = 0;
      probs.forEach((p, j) => { if (p > probs[best]) best = j; });
      const entry = {box: intBox(found[i].box, rgb.width, rgb.height), expression: this.labels[best],
        probabilities: Object.fromEntries(this.labels.map((name, j) => [name, Math.round(probs[j] * 1e6) / 1e6]))};
      if (details) {
        Object.assign(entry, {score: found[i].score, angle: found[i].angle, left_eye: found[i].leftEye,
          right_eye: found[i].rightEye, landmarks: found[i].landmarks, crop_centre: crops[i].centre,
          crop_side: crops[i].side, crop: Array.from(crops[i].image.data)});
      }
      faces.push(entry);
    }
    const t3 = performance.now();
    return {faces, timing: {detection: t1 - t0, alignment: t2 - t1, classification: t3 - t2}};
  }
}
