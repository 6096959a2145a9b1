"""`fer-tf predict --people [--enroll DIR] [--baseline DIR|self]`: the people part of `predict`.

Each face gets a ``person`` (``person-1``, ``person-2``, ... or an enrolled name; ``null`` with a
``person_reason`` when the face is too small or blurred for identity) and, in videos, a ``track``.
The images of a run are grouped together (:func:`fer_tf.deploy.people.predict_people`), so their
results come once every image is read; each video has its own tracks and people
(:class:`fer_tf.deploy.people.VideoPeople`). ``--enroll DIR`` names people: one subfolder of
photos, or one photo, per name. ``--baseline self`` corrects each face by its person's own faces;
``--baseline DIR`` by neutral photos in DIR, matched to the people by embedding. With a baseline,
``expression`` and ``probabilities`` are the corrected ones, ``raw_expression`` and
``raw_probabilities`` (``raw_frame_probabilities`` in videos) the model's own, and a video's frames
are written once the video is read (the correction needs all of a person's frames).
"""

from __future__ import annotations

import math
import pathlib
import sys

from fer_tf.errors import ConfigError

SELF = "self"


def add_arguments(parser):
    group = parser.add_argument_group("people (who is who; see the People section of the README)")
    group.add_argument("--people", action="store_true",
                       help="name each face's person (person-1, ... or an enrolled name) and, in "
                            "videos, its track; adds person (and track) to JSON, JSONL and CSV")
    group.add_argument("--enroll", metavar="DIR", default=None,
                       help="known people: a subfolder of photos or one photo per name (the "
                            "subfolder's name or the file's stem); implies --people")
    group.add_argument("--baseline", metavar="DIR|self", default=None,
                       help="correct each person's expressions by their own baseline: 'self' (their "
                            "faces in the run) or a folder of neutral photos, matched to the people "
                            "by face; raw scores are kept; implies --people")


def wanted(args):
    return bool(args.people or args.enroll or args.baseline)


class People:
    """The people options of one ``predict`` run, opened once: the embedder, the neutral photos'
    and the enrolled people's references (checked before any input is processed)."""

    def __init__(self, recognizer, args):
        from fer_tf.deploy import people as who  # deferred: dlib, only with --people

        self.who = who
        self.labels = recognizer.labels
        self.recognizer = recognizer
        self.embedder = who.default_embedder()
        self.baseline = args.baseline
        self.neutral = None
        if args.baseline is not None and args.baseline != SELF:
            folder = pathlib.Path(args.baseline)
            if not folder.exists():
                raise ConfigError(f"--baseline {folder}: no such folder; give a folder of neutral "
                                  "photos, or 'self'")
            refs = who.references(recognizer, folder, self.embedder)
            self.neutral = who.require_faces(refs, f"--baseline {folder}")
        self.enrolled = {}
        if args.enroll is not None:
            enroll = who.enrolment_folder(args.enroll)
            self.enrolled = who.enrolment(recognizer, enroll, self.embedder)
        #: The images' people (replaced by :meth:`images`; with no image, no one matched a name).
        self.summary = {"people": {}, "unmatched": sorted(self.enrolled)}
        #: Enrolled names that some video's faces matched (:meth:`saw_video`).
        self.matched_in_videos = set()

    def images(self, paths, progress=None):
        """``{path: entry}`` of the run's images, grouped together; keeps the run's people
        summary in :attr:`summary`."""
        result = self.who.predict_people(self.recognizer, paths, baseline=self.neutral or self.baseline,
                                         enroll=self.enrolled, embedder=self.embedder,
                                         progress=progress)
        entries = {}
        for image in result["images"]:
            entry = {"path": image["input"]}
            if "error" in image:
                entry["error"] = image["error"]
            else:
                entry["faces"] = [{k: v for k, v in face.items() if k not in ("input", "face")}
                                  for face in image["faces"]]
                if "faces_found" in image:
                    entry["faces_found"] = image["faces_found"]
            entries[image["input"]] = entry
        self.summary = {"people": result["people"], "unmatched": result["unmatched"]}
        if self.baseline is not None:
            self.summary["baseline"] = result["baseline"]
            _say_note(result["baseline"])
        return entries

    def saw_video(self, summary):
        """Keep which enrolled names a video's faces matched (its summary's ``unmatched`` lists the
        others)."""
        self.matched_in_videos |= set(self.enrolled) - set(summary.get("unmatched", ()))

    def run_summary(self):
        """The run's summary: the images' people, and the enrolled names that matched no face in
        any input, images or videos."""
        return {**self.summary, "unmatched": [name for name in self.summary["unmatched"]
                                              if name not in self.matched_in_videos]}

    def video_tracker(self):
        return self.who.VideoPeople(self.embedder, self.enrolled)

    def finish_video(self, entry, tracker, every):
        """Correct a video's collected frames by the baseline (nothing without one)."""
        self.who.finish_video(entry, self.labels, tracker, self.neutral or self.baseline, self.neutral,
                              every, self.who.stored_reference(self.recognizer.metadata, self.labels))
        _say_note((entry.get("summary") or {}).get("baseline") or {})


def _say_note(info):
    """Print why a baseline corrected nothing, when it says so."""
    if info.get("note"):
        print(f"note: {info['note']}", file=sys.stderr)


def summary_lines(people, prefix="  "):
    """Text lines of a per-person summary: faces, share and the most common expressions."""
    lines = []
    for person, s in people.items():
        shares = sorted(s["expression_shares"].items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{name} {share:.0%}" for name, share in shares if share > 0)
        time = f", {s['seconds']:.1f} s" if "seconds" in s else ""
        lines.append(f"{prefix}{person}: {s['faces']} face{'s' if s['faces'] != 1 else ''} "
                     f"({s['share']:.0%}{time}): {top}")
    return lines


class Timeline:
    """Probabilities over time for ``--timeline``: the largest face's, or with people one series
    per person (NaN where the person is not in the frame)."""

    def __init__(self, labels, people):
        self.labels = list(labels)
        self.people = people
        self.times, self.largest, self.series = [], [], {}

    def add(self, time, faces):
        nan = [math.nan] * len(self.labels)
        self.times.append(time)
        face = faces[0] if faces else None
        self.largest.append([face["probabilities"][n] for n in self.labels] if face else nan)
        if not self.people:
            return
        seen = set()
        for face in faces:
            person = face.get("person")
            if person is None or person in seen:
                continue
            seen.add(person)
            rows = self.series.setdefault(person, [nan] * (len(self.times) - 1))
            rows.append([face["probabilities"][n] for n in self.labels])
        for person, rows in self.series.items():
            if person not in seen:
                rows.append(nan)

    def draw(self, target, video, unit):
        from fer_tf.research import plots  # deferred: matplotlib (about 0.3 s), only for --timeline

        plots.expression_timeline(target, video, self.labels, self.times, self.largest, unit,
                                  people=self.series or None)
