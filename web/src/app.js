// The page: camera, photo and video inputs, the overlay, the results mirrored into #results.

import {Recognizer, intBox} from './recognizer.js';
import {fromImageData} from './imageops.js';
import {correctNeutral, NEUTRAL_DEFAULTS} from './baseline.js';

// Photos larger than this are decoded at this many pixels (faces keep enough detail; a 50 MP
// photo whole would need 200 MB of canvas pixels for every copy).
export const MAX_ANALYSED_PIXELS = 16e6;
const COLOURS = ['#ff3b30', '#34c759', '#0a84ff', '#ff9f0a', '#bf5af2'];

const $ = (id) => document.getElementById(id);
const view = $('view'), ctx = view.getContext('2d', {willReadFrequently: true});
const video = $('video');
let recognizer = null;
let stream = null, loopToken = 0;
const timings = {detection: [], alignment: [], classification: [], frame: []};

// -- enrolled neutral face (fer_tf/people/baseline.py correct_neutral, ported in baseline.js) -----
// The person in front of the camera enrols one or more neutral frames; while exactly one face is
// in view, its scores are corrected by them (no identity embedding in the page: with one face on
// camera, the enrolled neutral is that face's). The reference is the one the measured setting had
// (neutral_reference.json, pipelines/web_reference.py): with reference="run" a single enrolled
// person would never be corrected.
const neutral = {photos: [], reference: null, pending: false};
let latestRaw = [];  // the latest live frame's faces, uncorrected
let live = false;    // camera or video running

function rounded(labels, probs) {
  return Object.fromEntries(labels.map((name, j) => [name, Math.round(probs[j] * 1e6) / 1e6]));
}

/** Faces with the enrolled correction: expression/probabilities corrected, raw_* the model's own
 *  (the fields of fer-tf predict --baseline). Without an enrolment, or off camera, faces as given. */
function corrected(faces) {
  if (!neutral.photos.length || !live) return faces;
  const labels = recognizer.labels;
  const raw = faces.map((f) => labels.map((n) => f.probabilities[n]));
  // exactly one face: it is the enrolled person; several: nobody is corrected (no guessing)
  const persons = faces.map(() => (faces.length === 1 ? 'enrolled' : null));
  const result = correctNeutral(raw, persons, neutral.photos, neutral.photos.map(() => 'enrolled'),
    {...NEUTRAL_DEFAULTS, reference: neutral.reference || NEUTRAL_DEFAULTS.reference});
  return faces.map((f, i) => {
    const probabilities = rounded(labels, result.probabilities[i]);
    return {...f, probabilities, expression: labels.reduce((a, b) => (probabilities[b] > probabilities[a] ? b : a)),
      raw_expression: f.expression, raw_probabilities: f.probabilities, corrected: persons[i] !== null};
  });
}

function enrolmentNote(faces) {
  if (!neutral.photos.length || !live) return;
  const el = $('enrolment');
  el.dataset.faces = String(faces.length);
  el.textContent = faces.length > 1
    ? `${faces.length} faces in view: the enrolled neutral face applies when exactly one face is in view, so these are not corrected.`
    : `Neutral face enrolled (${neutral.photos.length} frame${neutral.photos.length === 1 ? '' : 's'}): corrected and raw results side by side.`;
}

/** Enrol the current live frame's face as the neutral face of the person in front of the camera. */
function enrollNeutral() {
  if (!live) throw new UserError('Start the camera (or a video) first: enrolment takes the face in view.');
  if (latestRaw.length !== 1) {
    throw new UserError(`Enrolment needs exactly one face in view; ${latestRaw.length} ${latestRaw.length === 1 ? 'is' : 'are'} there now. ` +
      'Make sure only the person enrolling is in view, looking neutral, and press "Enrol my neutral face" again.');
  }
  neutral.photos.push(recognizer.labels.map((n) => latestRaw[0].probabilities[n]));
  $('enroll-clear').disabled = false;
  showMessage('');
  enrolmentNote(latestRaw);
  return {frames: neutral.photos.length, raw: latestRaw[0]};
}

function clearNeutral() {
  neutral.photos.length = 0;
  neutral.pending = false;
  $('enroll-clear').disabled = true;
  $('enrolment').textContent = '';
}

function setStatus(text, state) {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

function showMessage(text, kind = 'error') {
  const m = $('message');
  m.textContent = text;
  m.className = kind;
  m.hidden = !text;
  m.dataset.kind = text ? kind : '';
}

function setResults(faces, scale = 1, size = null) {
  const out = faces.map((f) => ({...f, box: scale === 1 ? f.box : intBox(f.box.map((v) => v / scale), size[0], size[1])}));
  const el = $('results');
  el.dataset.json = JSON.stringify(out.map(({box, expression, probabilities, raw_expression, raw_probabilities}) =>
    (raw_probabilities ? {box, expression, probabilities, raw_expression, raw_probabilities} : {box, expression, probabilities})));
  el.replaceChildren();
  if (!out.length) {
    el.append(Object.assign(document.createElement('p'), {className: 'none', textContent: 'No face.'}));
    return;
  }
  out.forEach((f, i) => {
    const div = document.createElement('div');
    div.className = 'face';
    div.style.borderLeft = `4px solid ${COLOURS[i % COLOURS.length]}`;
    const head = document.createElement('div');
    head.innerHTML = `<span class="label"></span> <small></small>`;
    head.querySelector('.label').textContent = `${i + 1}. ${f.expression}` +
      (f.raw_probabilities ? (f.corrected ? ` (raw: ${f.raw_expression})` : ' (not corrected)') : '');
    head.querySelector('small').textContent = `box ${f.box.join(', ')}`;
    div.append(head);
    const columns = f.raw_probabilities && f.corrected
      ? [['corrected', f.probabilities], ['raw', f.raw_probabilities]] : [[null, f.probabilities]];
    const row = document.createElement('div');
    row.className = 'columns';
    for (const [title, probs] of columns) {
      const col = document.createElement('div');
      col.className = 'column';
      if (title) col.append(Object.assign(document.createElement('h3'), {textContent: title}));
      Object.entries(probs).sort((a, b) => b[1] - a[1]).forEach(([name, p]) => {
        const bar = document.createElement('div');
        bar.className = 'bar';
        bar.innerHTML = '<span></span><span class="fill"></span><span></span>';
        bar.children[0].textContent = name;
        bar.children[1].style.width = `${Math.round(p * 100)}px`;
        bar.children[2].textContent = p.toFixed(2);
        col.append(bar);
      });
      row.append(col);
    }
    div.append(row);
    el.append(div);
  });
}

// Every analysed frame's times (ms), the latest 1000: window.ferTf.log (pipelines/web_speed.py).
const frameLog = [];

function record(timing, frameMs, faces = 0) {
  frameLog.push({...timing, frame: frameMs, faces});
  if (frameLog.length > 1000) frameLog.shift();
  for (const [k, v] of Object.entries({...timing, frame: frameMs})) {
    timings[k].push(v);
    if (timings[k].length > 30) timings[k].shift();
  }
  const body = $('timing').tBodies[0];
  body.replaceChildren();
  for (const [k, list] of Object.entries(timings)) {
    const ms = list.reduce((a, b) => a + b, 0) / list.length;
    const row = body.insertRow();
    row.insertCell().textContent = k;
    row.insertCell().textContent = `${ms.toFixed(1)} ms`;
  }
  const fps = 1000 / (timings.frame.reduce((a, b) => a + b, 0) / timings.frame.length);
  const row = body.insertRow();
  row.insertCell().textContent = 'frames/s';
  row.insertCell().textContent = fps.toFixed(1);
  $('timing').dataset.json = JSON.stringify(Object.fromEntries(Object.entries(timings).map(([k, l]) => [k, l.slice()])));
}

function drawOverlay(faces) {
  const lw = Math.max(2, view.width / 320);
  ctx.lineWidth = lw;
  ctx.font = `${Math.round(Math.max(14, view.width / 40))}px system-ui, sans-serif`;
  faces.forEach((f, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const [x, y, w, h] = f.box;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const top = Object.entries(f.probabilities).sort((a, b) => b[1] - a[1]);
    const lines = [`${f.expression} ${top[0][1].toFixed(2)}`, ...top.slice(1, 3).map(([n, p]) => `${n} ${p.toFixed(2)}`)];
    if (f.raw_probabilities && f.corrected) {  // corrected above, raw below: side by side in the overlay
      lines[0] = `corrected: ${lines[0]}`;
      lines.push(`raw: ${f.raw_expression} ${f.raw_probabilities[f.raw_expression].toFixed(2)}`);
    }
    const lh = parseInt(ctx.font, 10) * 1.2;
    const block = lines.length * lh + 4; // above the box, else below it, else inside its top
    const ty = y >= block ? y - block : (y + h + block <= view.height ? y + h + 4 : Math.max(0, y) + 4);
    lines.forEach((text, j) => {
      const tw = ctx.measureText(text).width;
      ctx.fillStyle = j === 0 ? colour : 'rgba(0,0,0,0.6)';
      ctx.fillRect(x, ty + j * lh, tw + 8, lh);
      ctx.fillStyle = '#fff';
      ctx.fillText(text, x + 4, ty + (j + 0.8) * lh);
    });
  });
}

/** Analyse what is drawn on the canvas now (a camera or video frame). */
async function analyseCanvas(options) {
  const t0 = performance.now();
  const rgb = fromImageData(ctx.getImageData(0, 0, view.width, view.height));
  const result = await recognizer.analyse(rgb, options);
  latestRaw = result.faces;
  if (neutral.pending && result.faces.length === 1) {  // ?enroll=1: the first frame with one face
    neutral.pending = false;
    enrollNeutral();
  }
  const faces = corrected(result.faces);
  drawOverlay(faces);
  setResults(faces);
  enrolmentNote(faces);
  record(result.timing, performance.now() - t0, result.faces.length);
  return {...result, faces};
}

// -- photos --------------------------------------------------------------------------------------

async function decode(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (e) {
    throw new UserError(`${name} is not an image this browser can read (${blob.type || 'unknown type'}): choose a JPEG, PNG, GIF or WebP photo.`);
  }
  const original = [bitmap.width, bitmap.height];
  let scale = 1;
  if (original[0] * original[1] > MAX_ANALYSED_PIXELS) {
    scale = Math.sqrt(MAX_ANALYSED_PIXELS / (original[0] * original[1]));
    bitmap.close();
    bitmap = await createImageBitmap(blob, {resizeWidth: Math.floor(original[0] * scale),
      resizeHeight: Math.floor(original[1] * scale), resizeQuality: 'high'});
  }
  return {bitmap, original, scale};
}

class UserError extends Error {}

async function analyseBlob(blob, name, options = {}) {
  stopAll();
  setStatus(`Analysing ${name}…`, 'busy');
  showMessage('');
  const {bitmap, original, scale} = await decode(blob, name);
  view.width = bitmap.width; view.height = bitmap.height;
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgb = fromImageData(ctx.getImageData(0, 0, view.width, view.height));
  const t0 = performance.now();
  const result = await recognizer.analyse(rgb, options);
  drawOverlay(result.faces);
  setResults(result.faces, scale, original);
  record(result.timing, performance.now() - t0);
  const notes = [];
  if (scale !== 1) {
    notes.push(`${name} has ${(original[0] * original[1] / 1e6).toFixed(1)} megapixels (${original[0]}×${original[1]}); ` +
      `it was analysed at ${view.width}×${view.height} (this page works on up to ${MAX_ANALYSED_PIXELS / 1e6} MP); boxes are in the photo's own pixels.`);
  }
  if (!result.faces.length) {
    notes.push(`No face found in ${name}. Faces down to ${recognizer.aligner.minFace} pixels wide are searched; ` +
      'try a photo where the face is larger, frontal and well lit.');
  }
  showMessage(notes.join(' '), 'note');
  setStatus(`${name}: ${result.faces.length} face${result.faces.length === 1 ? '' : 's'}.`, 'done');
  return {...result, faces: result.faces.map((f) => ({...f, box: scale === 1 ? f.box : intBox(f.box.map((v) => v / scale), ...original)})),
    size: original, scale};
}

async function analyseUrl(url, options = {}) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new UserError(`Could not load ${url}: ${e.message}.`);
  }
  if (!response.ok) throw new UserError(`Could not load ${url}: HTTP ${response.status} ${response.statusText}.`);
  return analyseBlob(await response.blob(), decodeURIComponent(url.split('/').pop() || url), options);
}

// -- camera and video ----------------------------------------------------------------------------

function stopAll() {
  loopToken++;
  live = false;
  latestRaw = [];
  $('enroll').disabled = true;
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
  video.pause();
  video.removeAttribute('src');
  video.srcObject = null;
  $('camera-stop').disabled = true;
  $('camera-start').disabled = !recognizer;
}

async function runVideo(label) {
  const token = ++loopToken;
  for (const k in timings) timings[k].length = 0;
  view.width = video.videoWidth; view.height = video.videoHeight;
  $('camera-stop').disabled = false;
  live = true;
  $('enroll').disabled = false;
  setStatus(`${label}: running.`, label === 'Camera' ? 'camera' : 'video');
  let frames = 0;
  while (token === loopToken && !video.ended) {
    if (video.readyState >= 2) {
      ctx.drawImage(video, 0, 0, view.width, view.height);
      await analyseCanvas({minFace: null});
      frames++;
      $('status').dataset.frames = String(frames);
    }
    await new Promise((r) => requestAnimationFrame(r));
  }
  if (token === loopToken) {
    setStatus(`${label}: ended after ${frames} analysed frames.`, 'done');
    $('camera-stop').disabled = true;
    live = false;
    $('enroll').disabled = true;
  }
}

const CAMERA_ERRORS = {
  NotAllowedError: 'Camera permission was denied. Allow the camera for this page in the browser\'s site settings and press "Start camera" again, or analyse a photo or a video file instead.',
  SecurityError: 'Camera permission was denied. Allow the camera for this page in the browser\'s site settings and press "Start camera" again, or analyse a photo or a video file instead.',
  NotFoundError: 'No camera was found. Connect a camera and press "Start camera" again, or analyse a photo or a video file instead.',
  OverconstrainedError: 'No camera was found that gives 640×480 video. Connect another camera, or analyse a photo or a video file instead.',
  NotReadableError: 'The camera is in use by another program or could not be started. Close that program and press "Start camera" again.',
};

async function startCamera() {
  stopAll();
  showMessage('');
  setStatus('Starting the camera…', 'busy');
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new UserError('This browser gives no camera to this page (cameras need https or localhost).');
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
  } catch (e) {
    throw new UserError(CAMERA_ERRORS[e.name] || `The camera could not be started: ${e.name}: ${e.message}`);
  }
  video.srcObject = stream;
  await video.play();
  await recognizer.aligner.prepare(video.videoWidth, video.videoHeight, {minFace: null});
  await runVideo('Camera');
}

async function startVideoFile(file) {
  stopAll();
  showMessage('');
  setStatus(`Opening ${file.name}…`, 'busy');
  video.src = URL.createObjectURL(file);
  try {
    await new Promise((resolve, reject) => {
      video.onloadeddata = resolve;
      video.onerror = () => reject(new UserError(`${file.name} is not a video this browser can play: choose an MP4 (H.264) or WebM file.`));
    });
  } finally {
    video.onloadeddata = video.onerror = null;
  }
  await recognizer.aligner.prepare(video.videoWidth, video.videoHeight, {minFace: null});
  await video.play();
  await runVideo(file.name);
}

// -- wiring --------------------------------------------------------------------------------------

function guarded(fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      if (!(e instanceof UserError)) console.warn(e);
      stopAll();
      showMessage(e instanceof UserError ? e.message : `Something went wrong: ${e.message}`, 'error');
      setStatus('Ready: start the camera or choose a photo or a video file.', 'ready');
      if (!(e instanceof UserError)) throw e;
      return null;
    }
  };
}

async function main() {
  try {
    recognizer = await Recognizer.load(new URL('./', document.baseURI).href);
  } catch (e) {
    setStatus('The networks could not be loaded.', 'error');
    showMessage(`Loading failed: ${e.message}. Serve the built page (make web; make serve-web) and reload.`);
    throw e;
  }
  ['camera-start', 'photo', 'video-file'].forEach((id) => { $(id).disabled = false; });
  $('camera-start').onclick = guarded(startCamera);
  $('camera-stop').onclick = () => { stopAll(); setStatus('Stopped.', 'ready'); };
  $('photo').onchange = guarded(async (ev) => { const f = ev.target.files[0]; ev.target.value = ''; if (f) await analyseBlob(f, f.name); });
  $('video-file').onchange = guarded(async (ev) => { const f = ev.target.files[0]; ev.target.value = ''; if (f) await startVideoFile(f); });
  try {
    const ref = await fetch('neutral_reference.json').then((r) => (r.ok ? r.json() : null));
    if (ref && ref.labels.join() === recognizer.labels.join()) neutral.reference = ref.reference;
  } catch (e) { /* none: reference "run" (see the note below) */ }
  if (!neutral.reference) console.warn('neutral_reference.json is missing: an enrolled neutral face gives no correction (reference "run", one person)');
  const enrol = () => {  // a failed enrolment is a message on the page, not an exception
    try { return enrollNeutral(); } catch (e) { if (e instanceof UserError) { showMessage(e.message, 'error'); return null; } throw e; }
  };
  $('enroll').onclick = enrol;
  $('enroll-clear').onclick = clearNeutral;
  window.ferTf = {recognizer, analyseUrl: guarded(analyseUrl), analyseBlob: guarded(analyseBlob), stop: stopAll, log: frameLog,
    enrollNeutral: enrol, clearNeutral, neutral};
  setStatus('Ready: start the camera or choose a photo or a video file.', 'ready');
  const params = new URLSearchParams(location.search);
  if (params.has('image')) await guarded(analyseUrl)(params.get('image'));
  else if (params.has('camera')) {
    neutral.pending = ['1', 'true', ''].includes(params.get('enroll') ?? 'no');
    await guarded(startCamera)();
  }
}

window.ferTfReady = main();
