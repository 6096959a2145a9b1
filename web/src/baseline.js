// A person's enrolled neutral face corrects their expression scores: the JS port of
// fer_tf/people/baseline.py's correct_neutral (same rule, same options, same defaults; float64
// maths throughout, as NumPy's). tests/test_web.py checks both give the same probabilities.
//
// For a face i of person P with log-probabilities L_i:
//     L'_i = L_i - w_P * (o_P - r)          probabilities'_i = softmax(L'_i)
// o_P: the mean log-probabilities ('logits') of P's neutral photos, or the log of their mean
// probabilities ('probabilities'); r: the reference ('none': zeros, 'run': the mean offset of the
// enrolled people, or an array of log-probabilities); w_P = e / (e + k), e = P's neutral photos.

export const SPACES = ['logits', 'probabilities'];
export const REFERENCES = ['none', 'run'];
/** Floor under probabilities before their log (baseline.FLOOR). */
export const FLOOR = 1e-12;
/** baseline.NEUTRAL_DEFAULTS: the option measured best in reports/people/. */
export const NEUTRAL_DEFAULTS = Object.freeze({space: 'logits', shrinkage: 1.0, reference: 'run'});

export class BaselineError extends Error {}

function checkProbabilities(p, what) {
  if (!Array.isArray(p) || p.some((row) => !Array.isArray(row) || row.length !== p[0].length) ||
      (p.length && p[0].length < 2)) {
    throw new BaselineError(`${what}: expected a [faces, classes] array of probabilities with at least 2 classes`);
  }
  if (p.some((row) => row.some((v) => !Number.isFinite(v) || v < 0))) {
    throw new BaselineError(`${what}: probabilities must be finite and >= 0 (pass the model's softmax output, not logits)`);
  }
  return p;
}

export function logProbabilities(row) {
  return row.map((v) => Math.log(Math.max(v, FLOOR)));
}

export function softmax(logits) {
  const top = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

function meanRows(rows) {
  const out = new Array(rows[0].length).fill(0);
  for (const row of rows) row.forEach((v, j) => { out[j] += v; });
  return out.map((v) => v / rows.length);
}

/** One person's offset o_P (log-probabilities) from their neutral photos' probabilities. */
export function offset(probabilities, space = NEUTRAL_DEFAULTS.space) {
  checkProbabilities(probabilities, 'offset');
  if (!SPACES.includes(space)) throw new BaselineError(`space=${space}: use one of ${SPACES.join(', ')}`);
  if (!probabilities.length) throw new BaselineError('offset: no faces; a person needs at least one face');
  return space === 'logits' ? meanRows(probabilities.map(logProbabilities)) : logProbabilities(meanRows(probabilities));
}

/** e / (e + k); 0 where e <= 0 (no evidence, no correction). */
export function evidenceWeight(evidence, shrinkage) {
  const e = Math.max(evidence, 0);
  return e > 0 ? e / (e + shrinkage) : 0;
}

/**
 * Correct `probabilities` ([n][C]; persons: one id per face, null for unknown) by the neutral
 * photos `neutralProbabilities` ([m][C]) of `neutralPersons`. People with no neutral photo, and
 * unknown faces, keep their raw probabilities. Returns {probabilities, rawProbabilities, offsets
 * (person -> o_P - r), weights (person -> w_P), reference}.
 */
export function correctNeutral(probabilities, persons, neutralProbabilities, neutralPersons,
  {space = NEUTRAL_DEFAULTS.space, shrinkage = NEUTRAL_DEFAULTS.shrinkage, reference = NEUTRAL_DEFAULTS.reference} = {}) {
  const raw = checkProbabilities(probabilities, 'correctNeutral');
  const neutral = checkProbabilities(neutralProbabilities, 'correctNeutral: neutral photos');
  if (persons.length !== raw.length || neutralPersons.length !== neutral.length) {
    throw new BaselineError('correctNeutral: give one person id per face and per neutral photo (null: unknown)');
  }
  const classes = raw.length ? raw[0].length : (neutral.length ? neutral[0].length : 0);
  if (raw.length && neutral.length && neutral[0].length !== classes) {
    throw new BaselineError(`correctNeutral: the neutral photos have ${neutral[0].length} classes, the faces ${classes}; score both with the same model`);
  }
  if (!SPACES.includes(space)) throw new BaselineError(`space=${space}: use one of ${SPACES.join(', ')}`);
  if (!Number.isFinite(shrinkage) || shrinkage < 0) throw new BaselineError(`shrinkage=${shrinkage}: use a number >= 0 (0: full correction)`);
  if (typeof reference === 'string' && !REFERENCES.includes(reference)) {
    throw new BaselineError(`reference=${reference}: use one of ${REFERENCES.join(', ')} or an array of log-probabilities, one per class`);
  }
  if (typeof reference !== 'string' && (reference.length !== classes || !reference.every(Number.isFinite))) {
    throw new BaselineError(`reference: expected ${classes} finite log-probabilities`);
  }
  // the enrolled people, in order of first appearance
  const names = [], groups = new Map();
  neutralPersons.forEach((q, i) => {
    if (q === null || q === undefined) return;
    if (!groups.has(q)) { groups.set(q, []); names.push(q); }
    groups.get(q).push(neutral[i]);
  });
  const offsets = names.map((q) => offset(groups.get(q), space));
  const weights = names.map((q) => evidenceWeight(groups.get(q).length, shrinkage));
  let ref;
  if (typeof reference !== 'string') ref = reference.slice();
  else if (reference === 'run' && offsets.length) ref = meanRows(offsets);
  else ref = new Array(classes).fill(0);
  const shifts = offsets.map((o) => o.map((v, j) => v - ref[j]));
  const position = new Map(names.map((q, j) => [q, j]));
  const corrected = raw.map((row, i) => {
    const j = persons[i] === null || persons[i] === undefined ? undefined : position.get(persons[i]);
    if (j === undefined) return row.slice(); // unknown people keep their raw probabilities exactly
    return softmax(logProbabilities(row).map((v, c) => v - weights[j] * shifts[j][c]));
  });
  return {probabilities: corrected, rawProbabilities: raw.map((row) => row.slice()),
    offsets: Object.fromEntries(names.map((q, j) => [q, shifts[j]])),
    weights: Object.fromEntries(names.map((q, j) => [q, weights[j]])), reference: ref};
}
