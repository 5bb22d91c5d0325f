"""``serlens import ravdess FOLDER`` and ``serlens import hf-datasets PATH``: arguments and the run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_import_parser(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``import`` and its two importers to the ``serlens`` command's subparsers."""
    parser = sub.add_parser("import", help="write a manifest of a RAVDESS folder or a Hugging Face dataset")
    kinds = parser.add_subparsers(dest="importer", required=True)
    p = kinds.add_parser("ravdess", help="a RAVDESS folder (labels, actors and genders from the file names)")
    p.add_argument("folder", type=Path, help="the corpus root (Actor_01/ ... Actor_24/)")
    p.add_argument("--out", type=Path, required=True, help="folder for manifest.csv (the audio stays in place)")
    p.add_argument("--all-emotions", action="store_true",
                   help="keep calm (CAL) and surprised (SUR), which CREMA-D lacks (default: left out)")
    p.add_argument("--include-song", action="store_true", help="keep the song recordings (vocal channel 02)")
    common(p)
    p = kinds.add_parser("hf-datasets", help="a Hugging Face datasets folder written by save_to_disk")
    p.add_argument("path", type=Path, help="the folder Dataset.save_to_disk or DatasetDict.save_to_disk wrote")
    p.add_argument("--out", type=Path, required=True, help="folder for manifest.csv and the embedded audio")
    p.add_argument("--audio-column", default="audio", help="the audio column (default: audio)")
    p.add_argument("--label-column", default="label", help="the emotion column (default: label)")
    p.add_argument("--speaker-column", default="speaker_id", help="the speaker column (default: speaker_id)")
    p.add_argument("--gender-column", default="gender", help="the gender column (default: gender)")
    p.add_argument("--sentence-column", default=None, help="the transcript or sentence column (default: none)")
    p.add_argument("--id-column", default=None, help="a unique clip id column (default: <split>-<row>)")
    p.add_argument("--use-splits", action="store_true",
                   help="the DatasetDict's splits become the manifest's split column (train, validation, "
                        "test -> analysis) instead of serlens' speaker split")
    common(p)


def run_import(args: argparse.Namespace) -> int:
    """Run the importer ``args`` name and print what it wrote."""
    if args.importer == "ravdess":
        from serlens.shared.importers.ravdess import import_ravdess

        result = import_ravdess(args.folder, args.out, all_emotions=args.all_emotions, include_song=args.include_song)
    else:
        from serlens.shared.importers.hf_datasets import HfColumns, import_hf_dataset

        columns = HfColumns(audio=args.audio_column, label=args.label_column, speaker=args.speaker_column,
                            gender=args.gender_column, sentence=args.sentence_column, id=args.id_column)
        result = import_hf_dataset(args.path, args.out, columns=columns, use_splits=args.use_splits)
    print(result.summary())
    return 0
