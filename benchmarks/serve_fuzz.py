"""Property-based tests of ``grukit serve`` against its own OpenAPI page, with schemathesis: requests made from
the schema (and requests that break it) must never get a 5xx, and every answer must match its documented status
codes, content type and schema.

schemathesis is not a grukit dependency (it pins its own hypothesis); install it apart and pass its ``st``:

    python -m venv .st-venv && .st-venv/bin/pip install schemathesis
    python -m benchmarks.serve_fuzz --st .st-venv/bin/st --max-time 60

Serves a tiny SequenceTagger and a tiny GRULanguageModel in turn and prints schemathesis's summary for each;
exits with status 1 when either run found a failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.serve_load import live_server

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def tiny_models(folder: Path) -> dict[str, Path]:
    """A SequenceTagger and a GRULanguageModel small enough to train in a second, saved under ``folder``."""
    import torch

    from grukit.lm import GRULanguageModel, LMConfig
    from grukit.tasks import SequenceTagger
    from grukit.text.tokenizer import CharTokenizer

    sentences = [["the", "cat", "sat"], ["a", "dog", "ran", "far"], ["the", "dog", "sat"]]
    tags = [["D", "N", "V"], ["D", "N", "V", "R"], ["D", "N", "V"]]
    SequenceTagger(embedding_size=4, hidden_size=8, min_count=1, epochs=1).fit(sentences, tags).save_pretrained(
        folder / "tagger"
    )
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train(["the cat sat on the mat"])
    model = GRULanguageModel(LMConfig(tokenizer.vocab_size, embedding_size=6, hidden_size=10), tokenizer)
    model.save_pretrained(folder / "lm")
    return {"SequenceTagger": folder / "tagger", "GRULanguageModel": folder / "lm"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--st", default=shutil.which("st"), help="schemathesis's command (default: st on PATH)")
    parser.add_argument("--max-time", type=int, default=60, help="seconds of fuzzing per model")
    args = parser.parse_args(argv)
    if not args.st:
        parser.error("schemathesis's 'st' command was not found; install schemathesis and pass --st")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in tiny_models(Path(tmp)).items():
            flags = ("--max-sessions", "1000", "--max-new-tokens", "64", "--max-items", "32")
            with live_server(folder, *flags) as (_, url):
                command = [args.st, "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-time", str(args.max_time),
                           "--workers", "2", "--request-timeout", "30"]
                print(f"## {name}: {' '.join(command[1:])}", flush=True)
                failed |= subprocess.run(command, check=False, cwd=tmp).returncode != 0  # its cache stays in tmp
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
