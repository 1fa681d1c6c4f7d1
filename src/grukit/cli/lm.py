"""``grukit lm train | generate`` and ``grukit finetune lm | classify``.

A run folder (``--out`` of ``lm train`` and ``finetune lm``) holds ``data/`` (token files and
``source.json``, the text the run trains on), ``train_log.csv``, ``valid_log.csv``, ``tensorboard/``,
``checkpoint/`` and ``model/``. A command writes into a new or empty folder, or continues the run already in
one with ``--resume``; it refuses a folder holding anything else, and refuses to resume on other text than
the run was trained on.

``lm train`` needs no config file: ``--preset tiny | small | base`` (default tiny) names one shipped in
``grukit/lm/presets/``. Before training starts, a command says how many steps it will run (``--steps`` raises
the epochs it needs unless ``--epochs`` was given; a conflict is named), and a fine-tuning command names the
characters of the user's text that a character model's vocabulary lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.resources
import json
import math
import sys
from collections import Counter
from pathlib import Path

from grukit.cli.distributed import add_scale_options
from grukit.cli.options import (
    CONFIG_SECTIONS,
    check_model_out,
    folder_entries,
    listed,
    nonnegative_float,
    positive_float,
    positive_int,
    probability,
    random_seed,
    read_json_config,
    refuse_foreign_folder,
    valid_fraction,
)
from grukit.datasets import check_text_file, load_labelled, split_labelled
from grukit.lm import lora
from grukit.lm.classifier import ARCHITECTURE as CLASSIFIER
from grukit.lm.classifier import ClassifierTraining, GRUClassifier, finetune_classifier, predict
from grukit.lm.corpus import LineSource, kjv_sources, prepare_corpus, text_file_sources
from grukit.lm.model import GRULanguageModel, LMConfig
from grukit.lm.training import CHECKPOINT, MODEL, TRAIN_LOG, VALID_LOG, LMTrainingConfig, train_language_model
from grukit.text.batching import TBPTTBatches, read_token_file
from grukit.text.tokenizer import tokenizer_from_files, train_tokenizer
from grukit.train.checkpoint import checkpoint_exists, load_checkpoint, seed_everything

PRESETS = ("tiny", "small", "base")
RUN_ENTRIES = frozenset({"data", TRAIN_LOG, VALID_LOG, "tensorboard", CHECKPOINT, MODEL})
SOURCE_RECORD = "source.json"
EXTEND_HELP = "add the text's characters the character model lacks to its vocabulary before training"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm`` and ``finetune`` to the ``grukit`` command."""
    lm = subparsers.add_parser("lm", help="pretrain a GRU language model, or generate text with one")
    lm_commands = lm.add_subparsers(dest="lm_command", metavar="COMMAND", required=True)

    train = lm_commands.add_parser("train", help="pretrain on the King James Bible or your text files")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", choices=["kjv"], help="a corpus shipped by an installed package")
    source.add_argument("--text", nargs="+", metavar="FILE", help="UTF-8 text files")
    settings = train.add_mutually_exclusive_group()
    settings.add_argument("--preset", choices=PRESETS, help="a config shipped with grukit (default: tiny, a "
                          "1-layer char model that trains in minutes on a CPU)")
    settings.add_argument("--config", help="your JSON with 'tokenizer', 'model' and 'training' sections")
    train.add_argument("--out", required=True, help="run folder (new or empty): logs, checkpoint/, model/")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--steps", type=positive_int, help="stop after this many optimizer steps in all (default: "
                       "the config's, else after --epochs)")
    train.add_argument("--epochs", type=positive_int, help="passes over the training text (default: the config's)")
    train.add_argument("--valid-fraction", type=valid_fraction, default=0.05, help="held-out tail of --text")
    train.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    add_scale_options(train, accumulate=True)
    train.set_defaults(handler=run_lm_train)

    generate = lm_commands.add_parser("generate", help="stream a continuation of a prompt to the terminal")
    generate.add_argument("model", help="a model folder, or a run folder holding model/")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument("--max-new-tokens", type=positive_int, default=200, help="tokens to generate")
    generate.add_argument("--temperature", type=nonnegative_float, default=1.0, help="0 picks the likeliest token")
    generate.add_argument("--top-k", type=positive_int, help="sample among the k likeliest tokens (default: all)")
    generate.add_argument("--top-p", type=probability, help="nucleus sampling mass (default: 1, no cut)")
    generate.add_argument("--seed", type=random_seed, help="random seed (default: a fresh one each run)")
    generate.set_defaults(handler=run_lm_generate)

    finetune = subparsers.add_parser("finetune", help="adapt a pretrained language model to your text or task")
    finetune_commands = finetune.add_subparsers(dest="finetune_command", metavar="COMMAND", required=True)

    adapt = finetune_commands.add_parser("lm", help="domain adaptation: continue LM training on your text")
    adapt.add_argument("--lm", required=True, help="pretrained model folder (or run folder)")
    adapt.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    adapt.add_argument("--out", required=True, help="run folder (new or empty): logs, checkpoint/, model/")
    adapt.add_argument("--config", help="JSON with a 'training' section (default: LMTrainingConfig's defaults)")
    adapt.add_argument("--steps", type=positive_int, help="stop after this many optimizer steps (default: --epochs)")
    adapt.add_argument("--epochs", type=positive_int, help="passes over the text (default: the config's)")
    adapt.add_argument("--lr", type=positive_float, help="peak learning rate (default: the config's)")
    adapt.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    adapt.add_argument("--extend-vocab", action="store_true", help=EXTEND_HELP)
    adapt.add_argument("--valid-fraction", type=valid_fraction, default=0.05, help="held-out tail of --text")
    adapt.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    add_scale_options(adapt, accumulate=True)
    adapt.set_defaults(handler=run_finetune_lm)

    classify = finetune_commands.add_parser("classify", help="text classification, ULMFiT, LoRA or from scratch")
    encoder = classify.add_mutually_exclusive_group(required=True)
    encoder.add_argument("--lm", help="pretrained model folder (or run folder)")
    encoder.add_argument("--scratch", metavar="CONFIG.json", help="a fresh encoder: 'tokenizer' and 'model' sections")
    classify.add_argument("--data", required=True, help="'rotten_tomatoes' or a UTF-8 CSV with columns text,label")
    classify.add_argument("--out", required=True, help="model folder to write (new, empty, or an earlier one's)")
    classify.add_argument("--method", choices=["full", "lora", "scratch"],
                          help="default: full with --lm, scratch with --scratch")
    classify.add_argument("--train-size", type=positive_int, help="use this many training labels (default: all)")
    overrides = "(default: ClassifierTraining's)"
    classify.add_argument("--epochs", type=positive_int, help=f"passes over the labels {overrides}")
    classify.add_argument("--batch-size", type=positive_int, help=f"texts per step {overrides}")
    classify.add_argument("--lr", type=positive_float, help=f"peak learning rate {overrides}")
    classify.add_argument("--rank", type=positive_int, help=f"LoRA rank {overrides}")
    classify.add_argument("--alpha", type=positive_float, help=f"LoRA alpha {overrides}")
    classify.add_argument("--max-len", type=positive_int, help=f"tokens kept per text {overrides}")
    classify.add_argument("--extend-vocab", action="store_true", help=EXTEND_HELP + " (with --lm)")
    classify.add_argument("--seed", type=random_seed, default=0, help="seeds the label sample and training")
    classify.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                          help="no progress bar")
    add_scale_options(classify, accumulate=True)
    classify.set_defaults(handler=run_finetune_classify)


# Run folders -----------------------------------------------------------------------------------------------
def prepare_run_folder(out: Path, resume: bool) -> bool:
    """Whether to continue from ``out``'s checkpoint; refuses a folder training would write over (see the
    module docstring)."""
    names = folder_entries(out)
    # an interrupted save can leave hidden ".checkpoint.*" / ".model.*" folders beside the real ones
    foreign = [n for n in names if n not in RUN_ENTRIES and not n.startswith((f".{CHECKPOINT}.", f".{MODEL}."))]
    if foreign:
        refuse_foreign_folder(out, foreign, "grukit run folder")
    if not resume:
        if names:
            raise ValueError(
                f"--out {out} already holds a training run ({listed(names)}); pass --resume to continue it, "
                "or choose another --out"
            )
        return False
    if checkpoint_exists(out / CHECKPOINT):
        return True
    if names:
        print(f"--out {out} holds no checkpoint yet: starting the run from step 0", file=sys.stderr)
    return False


def describe_source(corpus: str | None, texts: list[str] | None, fraction: float) -> dict:
    """What a run trains on, to store in ``data/source.json``: the corpus, or each file's name and sha256."""
    if corpus:
        return {"corpus": corpus}
    files = []
    for name in texts or []:
        check_text_file(name)
        digest = hashlib.sha256()
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        files.append({"file": name, "sha256": digest.hexdigest()})
    return {"text": files, "valid_fraction": fraction}


def _source_words(source: dict) -> str:
    if "corpus" in source:
        return f"the {source['corpus']} corpus"
    files = ", ".join(f"{f['file']} (sha256 {f['sha256'][:12]})" for f in source["text"])
    return f"{files} with --valid-fraction {source['valid_fraction']}"


def check_same_source(out: Path, source: dict) -> None:
    """Refuse to resume the run in ``out`` on other text than it was trained on."""
    record = out / "data" / SOURCE_RECORD
    if not record.is_file():  # a run folder written before grukit recorded its text
        print(f"note: {out} does not record which text it was trained on; resuming on {_source_words(source)}",
              file=sys.stderr)
        record.write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
        return
    trained = json.loads(record.read_text("utf-8"))

    def identity(s: dict) -> tuple:
        return s.get("corpus"), [f["sha256"] for f in s.get("text", [])], s.get("valid_fraction")

    if identity(trained) != identity(source):
        raise ValueError(
            f"--resume: the checkpoint in {out} was trained on {_source_words(trained)}, not on "
            f"{_source_words(source)}; resume with the same text, or start a new run with another --out"
        )


def _sources(corpus: str | None, texts: list[str] | None, fraction: float) -> tuple[LineSource, LineSource]:
    return kjv_sources() if corpus == "kjv" else text_file_sources(texts, fraction)


def _prepare_tokens(out: Path, args: argparse.Namespace, source: dict, tokenizer_config: dict, tokenizer=None):
    """Tokenize the run's text into ``out/data`` and record what it was; ``(tokenizer, train, valid)``."""
    corpus = getattr(args, "corpus", None)
    tokenizer, train_tokens, valid_tokens = prepare_corpus(
        out / "data", *_sources(corpus, args.text, args.valid_fraction), tokenizer_config, tokenizer
    )
    (out / "data" / SOURCE_RECORD).write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
    if valid_tokens is None and not corpus and args.valid_fraction > 0:
        print(
            f"note: --valid-fraction {args.valid_fraction} held out no text (the split falls between lines, and the "
            "last lines start before it): training runs without validation",
            file=sys.stderr,
        )
    return tokenizer, train_tokens, valid_tokens


# Helpers ---------------------------------------------------------------------------------------------------
def model_folder(path: str | Path) -> Path:
    """A model folder itself, or the ``model/`` inside a training run folder."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / MODEL / "config.json").is_file():
        return path / MODEL
    if not (path / "config.json").is_file() and (path / "data").is_dir() and (path / TRAIN_LOG).is_file():
        latest = f"; the latest weights are in {path / CHECKPOINT}" if checkpoint_exists(path / CHECKPOINT) else ""
        raise ValueError(
            f"{path} is a training run that has not saved {MODEL}/ yet (it does at each epoch's end and at the "
            f"last step): continue it with the command that started it and --resume{latest}"
        )
    return path


def training_config(section: dict, args: argparse.Namespace) -> LMTrainingConfig:
    overrides = {k: getattr(args, k) for k in ("steps", "epochs", "lr", "accumulate", "precision")
                 if getattr(args, k, None) is not None}
    return LMTrainingConfig.from_dict({**section, **overrides})


def read_run_config(args: argparse.Namespace) -> tuple[dict[str, dict], str]:
    """The sections of ``--config``, or of the shipped ``--preset`` (default tiny), and what to call it."""
    if args.config:
        return read_json_config(args.config, CONFIG_SECTIONS, CONFIG_SECTIONS), args.config
    name = args.preset or "tiny"
    text = (importlib.resources.files("grukit.lm") / "presets" / f"{name}.json").read_text(encoding="utf-8")
    return {section: dict(json.loads(text).get(section, {})) for section in CONFIG_SECTIONS}, f"--preset {name}"


def plan_steps(training: LMTrainingConfig, section: dict, args: argparse.Namespace, tokens) -> LMTrainingConfig:
    """Say before training how many steps it runs. ``steps`` (``--steps`` or the config's) are run in full: the
    epochs they need replace the default epochs (a preset's included), unless epochs were given too
    (``--epochs``, or ``section``, the user's config), when the conflict is named and the earlier end wins."""
    per_epoch = len(TBPTTBatches(tokens, training.batch_size, training.seq_len))
    epochs_given = args.epochs is not None or "epochs" in section
    total = per_epoch * training.epochs
    if training.steps is not None and training.steps > total:
        needed = math.ceil(training.steps / per_epoch)
        if epochs_given:
            print(
                f"warning: steps {training.steps} conflict with epochs {training.epochs}: at {per_epoch} steps per "
                f"epoch, training ends after {total} steps; leave out the epochs (--epochs, or 'epochs' in the "
                f"config) to run all {training.steps}",
                file=sys.stderr,
            )
        else:
            training = dataclasses.replace(training, epochs=needed)
    steps = min(training.steps or total, per_epoch * training.epochs)
    print(f"training for {steps:,} steps: {training.epochs} epoch(s) of {per_epoch:,} steps (batch "
          f"{training.batch_size} × {training.seq_len} tokens)")
    return training


def unseen_characters(tokenizer, texts) -> tuple[list[tuple[str, int]], int]:
    """The characters of ``texts`` (strings) a character tokenizer lacks with their counts, most frequent first,
    and the number of characters read; line breaks are left out."""
    known = set(tokenizer.chars)
    counts: Counter = Counter()
    total = 0
    for text in texts:
        counts.update(text)
        total += len(text)
    return [(char, n) for char, n in counts.most_common() if char not in known and char not in "\n"], total


def warn_unseen_characters(tokenizer, texts, what: str, hint: str = "") -> None:
    """For a character tokenizer: warn, naming them, about characters of ``texts`` (strings) its vocabulary lacks,
    which the model reads as its unknown token; ``hint`` ends the warning."""
    if tokenizer.kind != "char":
        return
    unseen, total = unseen_characters(tokenizer, texts)
    if unseen:
        share = sum(n for _, n in unseen) / max(total, 1)
        shown = ", ".join(f"{char!r} ({n:,})" for char, n in unseen[:12])
        more = f" and {len(unseen) - 12} more" if len(unseen) > 12 else ""
        print(
            f"warning: {len(unseen)} distinct characters of {what}, {share:.2%} of its {total:,} characters, are not "
            f"in the model's vocabulary and become its unknown token: {shown}{more}{hint}",
            file=sys.stderr,
        )


def check_vocabulary(model: GRULanguageModel, texts, what: str, extend: bool) -> None:
    """Warn about the characters of ``texts`` the model's character vocabulary lacks or, with ``extend`` (the
    ``--extend-vocab`` flag), add them to the model and say how many."""
    if not extend:
        hint = "; pass --extend-vocab to add them"
        warn_unseen_characters(model.tokenizer, texts, what, hint)
        return
    if model.tokenizer.kind != "char":
        raise ValueError(
            f"--extend-vocab adds characters to a character tokenizer; this model's tokenizer is "
            f"{model.tokenizer.kind!r} (byte-level BPE encodes every character through its byte tokens)"
        )
    unseen, _ = unseen_characters(model.tokenizer, texts)
    added = model.extend_vocabulary([char for char, _ in unseen])
    shown = "".join(added[:40]) + (" …" if len(added) > 40 else "")
    print(f"added {len(added)} characters of {what} to the vocabulary, now {model.tokenizer.vocab_size}: {shown!r}")


def file_texts(paths: list[str]):
    """The text of each file in turn, a line at a time."""
    for path in paths:
        with open(path, encoding="utf-8-sig") as handle:
            yield from handle


def report_training(result: dict, out: Path) -> None:
    metric = next((k for k in ("valid_bits_per_char", "valid_perplexity") if k in result), None)
    scores = f", {metric.removeprefix('valid_')} {result[metric]:.4f}" if metric else ""
    print(
        f"{result['steps']} steps, last train loss {result['train_loss']:.4f}{scores}, "
        f"{result['tokens_per_second']:.0f} tokens/s; model in {out / MODEL}"
    )


# Commands --------------------------------------------------------------------------------------------------
def run_lm_train(args: argparse.Namespace) -> int:
    config, config_name = read_run_config(args)
    try:  # a typo in a section stops the run before any work, naming the file and the section
        training = training_config(config["training"], args)
        LMConfig.from_dict({**config["model"], "vocab_size": 2}).check_memory()
    except ValueError as error:
        section = "training" if "LMTrainingConfig" in str(error) else "model"
        raise ValueError(f"{config_name}, section {section!r}: {error}") from None
    out = Path(args.out)
    resume = prepare_run_folder(out, args.resume)
    source = describe_source(args.corpus, args.text, args.valid_fraction)
    if resume:
        check_same_source(out, source)
        checkpoint = load_checkpoint(out / CHECKPOINT)
        tokenizer = tokenizer_from_files(checkpoint.extra_files)
        wanted = LMConfig.from_dict({**config["model"], "vocab_size": tokenizer.vocab_size}).to_dict()
        changed = sorted(k for k in set(wanted) | set(checkpoint.config) if wanted.get(k) != checkpoint.config.get(k))
        if changed:
            raise ValueError(
                f"--resume: the 'model' section of {config_name} differs from the checkpoint in {out} in {changed}; "
                "resume with the config the run started with, or start a new run with another --out"
            )
        if (out / "data" / "train.bin").is_file():
            train_tokens = read_token_file(out / "data" / "train.bin")
            valid_tokens = read_token_file(out / "data" / "valid.bin")
            valid_tokens = valid_tokens if len(valid_tokens) > 1 else None
        else:
            _, train_tokens, valid_tokens = _prepare_tokens(out, args, source, {}, tokenizer)
    else:
        tokenizer, train_tokens, valid_tokens = _prepare_tokens(out, args, source, config["tokenizer"])
    seed_everything(training.seed)  # the same initial weights in every run with this seed
    model = GRULanguageModel(LMConfig.from_dict({**config["model"], "vocab_size": tokenizer.vocab_size}), tokenizer)
    _, total = lora.count_parameters(model)
    print(
        f"{len(train_tokens):,} training tokens, vocabulary {tokenizer.vocab_size} ({tokenizer.kind}); "
        f"{total:,} parameters"
    )
    training = plan_steps(training, config["training"] if args.config else {}, args, train_tokens)
    result = train_language_model(
        model, train_tokens, valid_tokens, out, training, resume=resume, progress=not args.no_progress
    )
    report_training(result, out)
    return 0


def run_lm_generate(args: argparse.Namespace) -> int:
    model = GRULanguageModel.from_pretrained(model_folder(args.model))
    warn_unseen_characters(model.tokenizer, [args.prompt], "the prompt")
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
    section = read_json_config(args.config, ("training",), CONFIG_SECTIONS)["training"] if args.config else {}
    training = training_config(section, args)
    out = Path(args.out)
    resume = prepare_run_folder(out, args.resume)
    source = describe_source(None, args.text, args.valid_fraction)
    if resume:
        check_same_source(out, source)
    model = GRULanguageModel.from_pretrained(model_folder(args.lm))
    check_vocabulary(model, file_texts(args.text), "your text", args.extend_vocab)
    _, train_tokens, valid_tokens = _prepare_tokens(out, args, source, {}, model.tokenizer)
    print(f"{len(train_tokens):,} tokens of your text with the pretrained {model.tokenizer.kind} tokenizer")
    training = plan_steps(training, section, args, train_tokens)
    result = train_language_model(
        model, train_tokens, valid_tokens, out, training, resume=resume, progress=not args.no_progress
    )
    report_training(result, out)
    return 0


def run_finetune_classify(args: argparse.Namespace) -> int:
    method = args.method or ("scratch" if args.scratch else "full")
    if args.scratch and method != "scratch":
        raise ValueError(f"--scratch builds a fresh encoder: use --method scratch, not {method!r}")
    if not args.scratch and method == "scratch":
        raise ValueError("--method scratch needs --scratch CONFIG.json (a fresh encoder), not --lm")
    if args.scratch and args.extend_vocab:
        raise ValueError("--extend-vocab extends a pretrained model's vocabulary (--lm); --scratch builds its own")
    out = Path(args.out)
    check_model_out(out, CLASSIFIER)
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lora_rank": args.rank,
        "lora_alpha": args.alpha,
        "max_len": args.max_len,
        "accumulate": args.accumulate,
        "precision": args.precision,
    }
    training = ClassifierTraining(
        method=method, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None}
    )
    config = read_json_config(args.scratch, ("tokenizer", "model"), CONFIG_SECTIONS) if args.scratch else None
    texts, labels, names = load_labelled(args.data)
    train_x, train_y, test_x, test_y = split_labelled(texts, labels, args.train_size, args.seed)
    if config is not None:
        tokenizer_config = dict(config["tokenizer"])
        kind, vocab_size = tokenizer_config.pop("type", "char"), tokenizer_config.pop("vocab_size", 4000)
        if tokenizer_config:
            raise ValueError(
                f"{args.scratch}: the 'tokenizer' section has unknown keys {sorted(tokenizer_config)}; "
                "expected 'type' and 'vocab_size'"
            )
        tokenizer = train_tokenizer(kind, train_x, vocab_size)
        model_config = LMConfig.from_dict({**config["model"], "vocab_size": tokenizer.vocab_size})
        encoder = GRULanguageModel(model_config, tokenizer)
    else:
        encoder = GRULanguageModel.from_pretrained(model_folder(args.lm))
        check_vocabulary(encoder, train_x, "the training texts", args.extend_vocab)
    model = GRUClassifier(encoder, len(names))
    result = finetune_classifier(
        model, encoder.tokenizer.encode_batch(train_x), train_y, training, progress=not args.no_progress
    )
    predicted = predict(model, encoder.tokenizer.encode_batch(test_x), max_len=training.max_len)
    accuracy = float((predicted == test_y).mean())
    print(
        f"{method}: {len(train_x)} training labels, trainable parameters {result['trainable_parameters']:,} of "
        f"{result['total_parameters']:,}, test accuracy {accuracy:.4f} on {len(test_x)} texts, "
        f"{result['seconds']:.0f} s"
    )
    (out / "results.json").unlink(missing_ok=True)  # an earlier run's summary: saving replaces only a bare model
    model.save_pretrained(out, {"labels": names})
    summary = {**result, "test_accuracy": accuracy, "train_labels": len(train_x), "test_texts": len(test_x)}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0
