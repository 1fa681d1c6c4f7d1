"""``grukit lm train | generate`` and ``grukit finetune lm | classify``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from grukit.lm import lora
from grukit.lm.classifier import ClassifierTraining, GRUClassifier, finetune_classifier, predict
from grukit.lm.corpus import kjv_sources, prepare_corpus, text_file_sources
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.lm.training import CHECKPOINT, MODEL, LMTrainingConfig, train_language_model
from grukit.text.batching import read_token_file
from grukit.text.tokenizer import tokenizer_from_files
from grukit.train.checkpoint import load_checkpoint

CONFIG_SECTIONS = ("tokenizer", "model", "training")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm`` and ``finetune`` to the ``grukit`` command."""
    lm = subparsers.add_parser("lm", help="pretrain a GRU language model, or generate text with one")
    lm_commands = lm.add_subparsers(dest="lm_command", metavar="COMMAND", required=True)

    train = lm_commands.add_parser("train", help="pretrain on the King James Bible or your text files")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", choices=["kjv"], help="a corpus shipped by an installed package")
    source.add_argument("--text", nargs="+", metavar="FILE", help="UTF-8 text files")
    train.add_argument("--config", required=True, help="JSON with 'tokenizer', 'model' and 'training' sections")
    train.add_argument("--out", required=True, help="run folder: logs, checkpoint/, model/")
    train.add_argument("--resume", action="store_true", help="continue from --out's checkpoint, exactly")
    train.add_argument("--steps", type=int, help="stop after this many optimizer steps in all")
    train.add_argument("--epochs", type=int, help="passes over the training text")
    train.add_argument("--valid-fraction", type=float, default=0.05, help="held-out tail of --text (default 0.05)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=run_lm_train)

    generate = lm_commands.add_parser("generate", help="stream a continuation of a prompt to the terminal")
    generate.add_argument("model", help="a model folder, or a run folder holding model/")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--seed", type=int)
    generate.set_defaults(handler=run_lm_generate)

    finetune = subparsers.add_parser("finetune", help="adapt a pretrained language model to your text or task")
    finetune_commands = finetune.add_subparsers(dest="finetune_command", metavar="COMMAND", required=True)

    adapt = finetune_commands.add_parser("lm", help="domain adaptation: continue LM training on your text")
    adapt.add_argument("--lm", required=True, help="pretrained model folder (or run folder)")
    adapt.add_argument("--text", nargs="+", required=True, metavar="FILE")
    adapt.add_argument("--out", required=True)
    adapt.add_argument("--config", help="JSON with a 'training' section (defaults otherwise)")
    adapt.add_argument("--steps", type=int)
    adapt.add_argument("--epochs", type=int)
    adapt.add_argument("--lr", type=float)
    adapt.add_argument("--resume", action="store_true")
    adapt.add_argument("--valid-fraction", type=float, default=0.05)
    adapt.add_argument("--no-progress", action="store_true")
    adapt.set_defaults(handler=run_finetune_lm)

    classify = finetune_commands.add_parser("classify", help="text classification, ULMFiT, LoRA or from scratch")
    encoder = classify.add_mutually_exclusive_group(required=True)
    encoder.add_argument("--lm", help="pretrained model folder (or run folder)")
    encoder.add_argument("--scratch", metavar="CONFIG.json", help="a fresh encoder: 'tokenizer' and 'model' sections")
    classify.add_argument("--data", required=True, help="'rotten_tomatoes' or a CSV file with columns text,label")
    classify.add_argument("--out", required=True)
    classify.add_argument("--method", choices=["full", "lora", "scratch"], help="default: full with --lm")
    classify.add_argument("--train-size", type=int, help="use this many training labels (stratified sample)")
    classify.add_argument("--epochs", type=int)
    classify.add_argument("--batch-size", type=int)
    classify.add_argument("--lr", type=float)
    classify.add_argument("--rank", type=int, help="LoRA rank")
    classify.add_argument("--alpha", type=float, help="LoRA alpha")
    classify.add_argument("--max-len", type=int)
    classify.add_argument("--seed", type=int, default=0)
    classify.add_argument("--no-progress", action="store_true")
    classify.set_defaults(handler=run_finetune_classify)


# Helpers ---------------------------------------------------------------------------------------------------
def read_config(path: str, sections: tuple[str, ...] = CONFIG_SECTIONS) -> dict:
    try:
        config = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as error:
        raise SystemExit(f"no config file {path!r}") from error
    except ValueError as error:
        raise SystemExit(f"config {path!r} is not valid JSON: {error}") from error
    unknown = sorted(set(config) - set(CONFIG_SECTIONS))
    if unknown:
        raise SystemExit(f"config {path!r} has unknown sections {unknown}; expected {list(CONFIG_SECTIONS)}")
    return {section: dict(config.get(section, {})) for section in sections}


def model_folder(path: str | Path) -> Path:
    """A model folder itself, or the ``model/`` inside a training run folder."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / MODEL / "config.json").is_file():
        return path / MODEL
    return path


def training_config(section: dict, args: argparse.Namespace) -> LMTrainingConfig:
    overrides = {k: getattr(args, k) for k in ("steps", "epochs", "lr") if getattr(args, k, None) is not None}
    return LMTrainingConfig.from_dict({**section, **overrides})


def report_training(result: dict, out: str) -> None:
    metric = next((k for k in ("valid_bits_per_char", "valid_perplexity") if k in result), None)
    scores = f", {metric.removeprefix('valid_')} {result[metric]:.4f}" if metric else ""
    print(
        f"{result['steps']} steps, last train loss {result['train_loss']:.4f}{scores}, "
        f"{result['tokens_per_second']:.0f} tokens/s; model in {Path(out) / MODEL}"
    )


# Commands --------------------------------------------------------------------------------------------------
def run_lm_train(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    out = Path(args.out)
    train_source, valid_source = (
        kjv_sources() if args.corpus == "kjv" else text_file_sources(args.text, args.valid_fraction)
    )
    resume = args.resume and (out / CHECKPOINT).is_dir()
    if resume and (out / "data" / "train.bin").is_file():
        checkpoint = load_checkpoint(out / CHECKPOINT)
        tokenizer = tokenizer_from_files(checkpoint.extra_files)
        train_tokens = read_token_file(out / "data" / "train.bin")
        valid_tokens = read_token_file(out / "data" / "valid.bin")
        valid_tokens = valid_tokens if len(valid_tokens) > 1 else None
    else:
        tokenizer, train_tokens, valid_tokens = prepare_corpus(
            out / "data", train_source, valid_source, config["tokenizer"]
        )
    model = GRULanguageModel(LMConfig.from_dict({**config["model"], "vocab_size": tokenizer.vocab_size}), tokenizer)
    trainable, total = lora.count_parameters(model)
    print(
        f"{len(train_tokens):,} training tokens, vocabulary {tokenizer.vocab_size} ({tokenizer.kind}); "
        f"{total:,} parameters"
    )
    result = train_language_model(
        model,
        train_tokens,
        valid_tokens,
        out,
        training_config(config["training"], args),
        resume=resume,
        progress=not args.no_progress,
    )
    report_training(result, args.out)
    return 0


def run_lm_generate(args: argparse.Namespace) -> int:
    model = GRULanguageModel.from_pretrained(model_folder(args.model))
    sys.stdout.write(args.prompt)
    for piece in model.stream_text(
        args.prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def run_finetune_lm(args: argparse.Namespace) -> int:
    model = GRULanguageModel.from_pretrained(model_folder(args.lm))
    section = read_config(args.config, ("training",))["training"] if args.config else {}
    out = Path(args.out)
    train_source, valid_source = text_file_sources(args.text, args.valid_fraction)
    _, train_tokens, valid_tokens = prepare_corpus(out / "data", train_source, valid_source, {}, model.tokenizer)
    print(f"{len(train_tokens):,} tokens of your text with the pretrained {model.tokenizer.kind} tokenizer")
    result = train_language_model(
        model,
        train_tokens,
        valid_tokens,
        out,
        training_config(section, args),
        resume=args.resume and (out / CHECKPOINT).is_dir(),
        progress=not args.no_progress,
    )
    report_training(result, args.out)
    return 0


def load_labelled(data: str) -> tuple[list[str], np.ndarray, list[str]]:
    """``(texts, labels, label names)`` for ``rotten_tomatoes`` or a CSV file with columns text,label."""
    if data == "rotten_tomatoes":
        from grukit.datasets import load_rotten_tomatoes

        texts, labels = load_rotten_tomatoes()
        return texts, labels, ["rotten", "fresh"]
    import csv

    path = Path(data)
    if not path.is_file():
        raise SystemExit(f"--data expected 'rotten_tomatoes' or a CSV file, got {data!r} (no such file)")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"text", "label"} <= set(rows[0]):
        raise SystemExit(f"{data!r} needs a header with columns 'text' and 'label'")
    names = sorted({row["label"] for row in rows})
    return [row["text"] for row in rows], np.array([names.index(row["label"]) for row in rows]), names


def split_labelled(
    texts: list[str], labels: np.ndarray, train_size: int | None, seed: int
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """80/20 stratified split (``random_state=0``, as DATA.md's baselines); then, with ``train_size``, a
    stratified sample of that many training labels."""
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=0.2, stratify=labels, random_state=0)
    if train_size is not None and train_size < len(train_x):
        train_x, _, train_y, _ = train_test_split(
            train_x, train_y, train_size=train_size, stratify=train_y, random_state=seed
        )
    return train_x, np.asarray(train_y), test_x, np.asarray(test_y)


def run_finetune_classify(args: argparse.Namespace) -> int:
    method = args.method or ("scratch" if args.scratch else "full")
    if args.scratch:
        if method != "scratch":
            raise SystemExit(f"--scratch builds a fresh encoder: use --method scratch, not {method!r}")
        config = read_config(args.scratch, ("tokenizer", "model"))
    elif method == "scratch":
        raise SystemExit("--method scratch needs --scratch CONFIG.json (a fresh encoder), not --lm")
    texts, labels, names = load_labelled(args.data)
    train_x, train_y, test_x, test_y = split_labelled(texts, labels, args.train_size, args.seed)
    if args.scratch:
        from grukit.text.tokenizer import train_tokenizer

        tokenizer_config = dict(config["tokenizer"])
        tokenizer = train_tokenizer(
            tokenizer_config.get("type", "char"), train_x, tokenizer_config.get("vocab_size", 4000)
        )
        encoder = GRULanguageModel(
            LMConfig.from_dict({**config["model"], "vocab_size": tokenizer.vocab_size}), tokenizer
        )
    else:
        encoder = GRULanguageModel.from_pretrained(model_folder(args.lm))
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lora_rank": args.rank,
        "lora_alpha": args.alpha,
        "max_len": args.max_len,
    }
    training = ClassifierTraining(
        method=method, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None}
    )
    model = GRUClassifier(encoder, len(names))
    train_rows = encoder.tokenizer.encode_batch(train_x)
    result = finetune_classifier(model, train_rows, train_y, training, progress=not args.no_progress)
    accuracy = float(
        (predict(model, encoder.tokenizer.encode_batch(test_x), max_len=training.max_len) == test_y).mean()
    )
    print(
        f"{method}: {len(train_x)} training labels, trainable parameters {result['trainable_parameters']:,} of "
        f"{result['total_parameters']:,}, test accuracy {accuracy:.4f} on {len(test_x)} texts, "
        f"{result['seconds']:.0f} s"
    )
    model.save_pretrained(args.out, {"labels": names})
    summary = {**result, "test_accuracy": accuracy, "train_labels": len(train_x), "test_texts": len(test_x)}
    (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0
