# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""One command for the paper's protector comparison (Table 1) and UMed ablations (Table 5) on one dataset.

For one dataset and one seed-fixed split, every *variant* (a protector, or a documented setting of one) is run as
its bundle command in a subprocess, then the same exploiter is trained on its protected files and scored on the
CLEAN test images; one exploiter trained on the clean training images gives the reference:

1. ``split`` (``<output_dir>/split.json``), once;
2. ``train_exploiter`` on the clean training images (``<output_dir>/clean/``), once;
3. per variant: ``protect`` (``<output_dir>/<variant>/protect/``) and ``train_exploiter`` on its protected files
   (``<output_dir>/<variant>/exploit/``).

Then ``table.md`` (one row per variant: DSC / Jaccard at the final epoch, best DSC over the epochs with its epoch,
PSNR / SSIM of the written files, protect wall time, the commands) and ``table.csv``. With ``--defenses`` (e.g.
``none,jpeg,gaussian_blur,median,downsample_upsample,augment``) every exploiter run is repeated under each defense
(the clean reference too), and ``table.md`` gains the matrix rows = defenses x columns = clean and the variants
(final / best DSC), also as ``matrix.csv`` and ``heatmap.png``. ``--reuse`` skips every step
whose outputs exist and whose command is unchanged, so an interrupted comparison resumes.

A defense or a variant may carry one setting after ``@``, so that one matrix holds the rows and columns of a whole
robustness study: ``jpeg@10`` (JPEG at quality 10, ISS's setting, beside ``jpeg`` at ``--jpeg_quality``),
``gaussian_blur@1.5`` (sigma), ``adversarial_training@8/255`` (the PGD radius); ``umed@8/255`` or
``umed_robust@8/255`` (the variant's protector at that l-inf epsilon, in the folder ``umed_eps8-255``).

Variants (``--variants``, a comma list; ``table1`` and ``table5`` expand to the paper's rows):

- ``umed``, ``lsp``, ``em``, ``tap``, ``sep``, ``ar``: the six protectors, each with its bundle config
  (``protect.json`` for UMed, ``protect_<name>.json`` for the baselines);
- Table 5's rows B-G: ``umed_contour`` (G_c only), ``umed_contour_vanilla`` (G_c only with plain convolutions
  instead of the CDC encoder, theta = 0), ``em_band`` (EM restricted to the contour band), ``umed_texture`` (G_t
  only), ``umed_texture_fixed`` (G_t only with a fixed epsilon bound in the ROI instead of the LBP map),
  ``em_roi`` (EM restricted to the ROI).

Example (the README's tables)::

    python examples/compare_protectors.py --dataset_dir ../shared/data/busi_224 --output_dir outputs/compare \\
        --variants table1,table5 --extra "sep=--pgd_steps 50"
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import shlex
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

from protection_report import (  # noqa: E402  (shared helpers of the example scripts)
    Steps,
    bundle_command,
    comma_list,
    display_command,
    fmt,
    log,
    move_aside,
    protect_complete,
    read_json,
    run_step,
)

from monai_umed.apps import parse_epsilon  # noqa: E402
from monai_umed.utils import atomic_write_text  # noqa: E402

#: variant -> (protect config, protector name, extra protect arguments, description)
VARIANTS: dict[str, tuple[str, str, list[str], str]] = {
    "umed": ("protect.json", "umed", [], "UMed (G_c + G_t, CDC encoder, LBP bound)"),
    "lsp": ("protect_lsp.json", "lsp", [], "LSP (Yu et al. 2022)"),
    "em": ("protect_em.json", "em", [], "EM (Huang et al. 2021)"),
    "tap": ("protect_tap.json", "tap", [], "TAP (Fowl et al. 2021)"),
    "sep": ("protect_sep.json", "sep", [], "SEP (Chen et al. 2023)"),
    "ar": ("protect_ar.json", "ar", [], "AR (Sandoval-Segura et al. 2022)"),
    "umed_robust": ("protect.json", "umed", ["--robust", "true"], "UMed trained through the countermeasures (EOT)"),
    "umed_robust_jpeg": ("protect.json", "umed", ["--robust", "identity,jpeg"], "UMed trained through JPEG (EOT)"),
    "umed_robust_gen": (
        "protect.json", "umed", ["--robust", "true", "--robust_surrogate", "false"],
        "UMed, generators alone trained through the countermeasures (EOT)",
    ),
    "umed_robust_gen_all": (
        "protect.json", "umed", ["--robust", "all", "--robust_surrogate", "false"],
        "UMed, generators alone trained through the countermeasures and augmentation (EOT)",
    ),
    "umed_robust_gen_augment": (
        "protect.json", "umed", ["--robust", "identity,augment", "--robust_surrogate", "false"],
        "UMed, generators alone trained through the augmentation recipe for half the images (EOT)",
    ),
    "umed_contour": ("protect.json", "umed", ["--perturbator_args#parts", "contour"], "UMed, G_c only"),
    "umed_texture": ("protect.json", "umed", ["--perturbator_args#parts", "texture"], "UMed, G_t only"),
    "umed_contour_vanilla": (
        "protect.json", "umed", ["--perturbator_args#parts", "contour", "--perturbator_args#theta", "0.0"],
        "UMed, G_c only, vanilla U-Net encoder",
    ),
    "umed_texture_fixed": (
        "protect.json", "umed", ["--perturbator_args#parts", "texture", "--perturbator_args#texture_bound", "fixed"],
        "UMed, G_t only, fixed bound instead of LBP",
    ),
    "em_band": ("protect_em.json", "em", ["--region", "band"], "EM restricted to the contour band"),
    "em_roi": ("protect_em.json", "em", ["--region", "roi"], "EM restricted to the ROI"),
}
#: the rows of the paper's tables
GROUPS = {
    "table1": ["umed", "lsp", "em", "tap", "sep", "ar"],
    "table5": ["umed", "umed_contour", "umed_contour_vanilla", "em_band", "umed_texture", "umed_texture_fixed", "em_roi"],
}
#: protectors trained at ``--image_size`` (LSP and AR work on the native grid)
TRAINED = ("umed", "em", "tap", "sep")
CSV_COLUMNS = ("variant", "description", "dsc", "jaccard", "dsc_best", "dsc_best_epoch", "psnr", "ssim", "linf_max",
               "protect_seconds", "exploit_seconds")


#: defenses that take one setting in ``--defenses`` as ``NAME@VALUE``: the ``train_exploiter`` option it sets
DEFENSE_SETTINGS = {"jpeg": "jpeg_quality", "gaussian_blur": "blur_sigma", "adversarial_training": "adv_epsilon"}


def split_variant(label: str) -> tuple[str, str | None]:
    """``"umed_robust@8/255"`` -> ``("umed_robust", "8/255")``; ``"umed"`` -> ``("umed", None)``."""
    base, at, eps = label.partition("@")
    return base, (eps if at else None)


def variant_dir(label: str) -> str:
    """Folder of a variant column: its name, with ``_eps<epsilon>`` for ``VARIANT@EPS`` (``umed_eps8-255``)."""
    base, eps = split_variant(label)
    return base if eps is None else f"{base}_eps{eps.replace('/', '-')}"


def expand_variants(text: str) -> list[str]:
    """``"table1,umed_vanilla,umed@8/255"`` -> the variant columns, groups expanded, order kept, duplicates dropped.
    ``VARIANT@EPS`` is the variant's protector at l-inf epsilon ``EPS`` (``8/255`` or ``0.0314``).

    Raises:
        ValueError: an unknown variant or group (the message lists the valid names), or an epsilon that is not one.
    """
    out: list[str] = []
    for name in comma_list(text):
        base, eps = split_variant(name)
        if eps is not None:
            if base in GROUPS:
                raise ValueError(f"{name!r}: give an epsilon to single variants, not to the group {base!r}")
            parse_epsilon(eps, f"variants {name}")  # a UserInputError (a ValueError) naming the column
        names = GROUPS.get(base, [base])
        for n in names:
            if n not in VARIANTS:
                raise ValueError(f"unknown variant {n!r}; valid: {', '.join([*GROUPS, *VARIANTS])}")
            label = n if eps is None else f"{n}@{eps}"
            if label not in out:
                out.append(label)
    return out


def parse_defenses(text: str) -> list[str]:
    """``"none,jpeg,jpeg@10,adversarial_training@8/255"`` -> the defense rows, checked: a known defense, and a
    setting after ``@`` only for those of :data:`DEFENSE_SETTINGS` (JPEG quality 1-100, blur sigma > 0, PGD epsilon).

    Raises:
        ValueError: an empty list, an unknown defense, or a setting the defense does not take or cannot use.
    """
    from monai_umed.apps import EXPLOIT_DEFENSES

    rows = comma_list(text)
    if not rows:
        raise ValueError("--defenses: empty list")
    bad = [r for r in rows if r.partition("@")[0] not in EXPLOIT_DEFENSES]
    if bad:
        raise ValueError(f"--defenses: unknown {bad}; valid: {', '.join(EXPLOIT_DEFENSES)}")
    for row in rows:
        name, at, value = row.partition("@")
        if not at:
            continue
        if name not in DEFENSE_SETTINGS:
            raise ValueError(f"--defenses {row!r}: {name} takes no setting; settings: "
                             + ", ".join(f"{k}@{v}" for k, v in DEFENSE_SETTINGS.items()))
        try:
            if name == "jpeg":
                ok = value.isdigit() and 1 <= int(value) <= 100
            elif name == "gaussian_blur":
                ok = math.isfinite(float(value)) and float(value) > 0
            else:
                ok = 0 < parse_epsilon(value, f"defenses {row}") < 1
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--defenses {row!r}: {value!r} is not a valid {DEFENSE_SETTINGS[name]}")
    return rows


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    """``["sep=--pgd_steps 50"]`` -> ``{"sep": ["--pgd_steps", "50"]}`` (a repeated variant's arguments add up).
    The key is a variant (its arguments go to every epsilon of it) or a ``VARIANT@EPS`` column."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, args = item.partition("=")
        if not sep or split_variant(name.strip())[0] not in VARIANTS:
            raise ValueError(f"--extra expects VARIANT=ARGS with a known variant, got {item!r}")
        out.setdefault(name.strip(), []).extend(shlex.split(args))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset_dir", required=True, help="dataset folder")
    p.add_argument("--stems", default=None, help="optional text file with one case stem per line (the split's cases)")
    p.add_argument("--output_dir", required=True, help="comparison folder (must not be inside the dataset)")
    p.add_argument("--variants", default="table1",
                   help="comma list of variants and groups (table1, table5); VARIANT@EPS for another l-inf epsilon")
    p.add_argument("--extra", action="append", default=[], help='VARIANT=ARGS, e.g. "sep=--pgd_steps 50"')
    p.add_argument("--protect_args", default="", help="arguments added to every protect command")
    p.add_argument("--image_size", type=int, default=96, help="training size of the trained protectors and exploiters")
    p.add_argument("--exploiter", default="unet")
    p.add_argument("--defenses", default="none",
                   help="comma list of exploiter defenses (a matrix when not only none); jpeg@10, gaussian_blur@SIGMA, "
                        "adversarial_training@EPS for another setting")
    p.add_argument("--jpeg_quality", type=int, default=30, help="quality of the jpeg defense (10: the ISS setting)")
    p.add_argument("--max_epochs", type=int, default=30, help="exploiter epochs")
    p.add_argument("--batch_size", type=int, default=16, help="exploiter batch size")
    p.add_argument("--exploiter_lr", type=float, default=1e-3)
    p.add_argument("--test_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    p.add_argument("--verify", default="false", help="protect's self-verification for UMed variants (slower)")
    p.add_argument("--reuse", action="store_true", help="skip steps whose outputs exist (resume)")
    p.add_argument("--quiet", action="store_true", help="do not echo the steps' output (it is still logged)")
    args = p.parse_args(argv)
    try:
        args.defense_list = parse_defenses(args.defenses)
        args.variant_list = expand_variants(args.variants)
        args.extra_args = parse_extra(args.extra)
    except ValueError as exc:
        p.error(str(exc))
    if not Path(args.dataset_dir).is_dir():
        p.error(f"--dataset_dir not found: {args.dataset_dir}")
    return args


def protect_command(args: argparse.Namespace, variant: str, dataset: Path, split: Path, out: Path) -> list[str]:
    """The bundle ``protect`` command of one variant column (``VARIANT@EPS``: with ``--epsilon EPS``)."""
    base, eps = split_variant(variant)
    config, name, extra, _ = VARIANTS[base]
    overrides: dict = {"dataset_dir": dataset, "datalist": split, "output_dir": out, "seed": args.seed}
    if name in TRAINED:
        overrides.update(image_size=args.image_size, device=None if args.device == "auto" else args.device)
    if config == "protect.json":
        overrides["verify"] = args.verify
    tail = [*extra, *shlex.split(args.protect_args), *args.extra_args.get(base, [])]
    if eps is not None:
        tail += [*args.extra_args.get(variant, []), "--epsilon", eps]
    return bundle_command("protect", config, overrides, tail)


def variant_description(variant: str) -> str:
    base, eps = split_variant(variant)
    return VARIANTS[base][3] + ("" if eps is None else f", epsilon {eps}")


def exploit_command(
    args: argparse.Namespace, dataset: Path, split: Path, train_dir: Path | None, out: Path, defense: str = "none"
) -> list[str]:
    """The bundle ``train_exploiter`` command, trained on ``train_dir`` (clean when ``None``) under ``defense``,
    scored on the clean test set. ``defense`` is a row of :func:`parse_defenses` (``jpeg@10`` sets
    ``--jpeg_quality 10``; plain ``jpeg`` takes ``--jpeg_quality``)."""
    name, at, value = defense.partition("@")
    overrides = {
        "dataset_dir": dataset, "datalist": split, "train_dir": train_dir, "output_dir": out,
        "exploiter": args.exploiter, "image_size": args.image_size, "max_epochs": args.max_epochs,
        "batch_size": args.batch_size, "lr": args.exploiter_lr, "seed": args.seed,
        "device": None if args.device == "auto" else args.device, "progress": False,
        "defense": None if name == "none" else name,
        "jpeg_quality": args.jpeg_quality if name == "jpeg" else None,
    }
    if at:
        overrides[DEFENSE_SETTINGS[name]] = value
    return bundle_command("train_exploiter", "train_exploiter.json", overrides)


def run_name(base: str, defense: str) -> str:
    """Folder / step name of an exploiter run: ``base`` without a defense, ``base_<defense>`` with one
    (``jpeg@10`` -> ``base_jpeg_10``, ``adversarial_training@8/255`` -> ``base_adversarial_training_8-255``)."""
    return base if defense == "none" else f"{base}_{defense.replace('@', '_').replace('/', '-')}"


def defense_label(defense: str, args: argparse.Namespace) -> str:
    """A matrix row's name as shown: ``jpeg`` with its quality (``jpeg (quality 30)``), the others as given."""
    return f"jpeg (quality {args.jpeg_quality})" if defense == "jpeg" else defense


def write_matrix(
    out: Path, args: argparse.Namespace, matrix: dict[tuple[str, str], dict], files: dict[str, dict] | None = None
) -> list[str]:
    """``matrix.csv`` (one row per defense and column, with the PSNR / SSIM of the column's files) and
    ``heatmap.png`` (final DSC, rows defenses, columns clean and the variants); returns the markdown table, whose
    last row is the PSNR / SSIM of each column's files (``files``: column -> ``{"psnr", "ssim"}``)."""
    columns = ["clean", *args.variant_list]
    files = files or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["defense", "column", "dsc", "dsc_best", "dsc_best_epoch", "jaccard", "psnr", "ssim"])
    for d in args.defense_list:
        for c in columns:
            m = {**(matrix.get((d, c)) or {}), **(files.get(c) or {})}
            keys = ("dsc", "dsc_best", "dsc_best_epoch", "jaccard", "psnr", "ssim")
            w.writerow([d, c, *["" if m.get(k) is None else m[k] for k in keys]])
    atomic_write_text(out / "matrix.csv", buf.getvalue())
    lines = [
        "## DSC under each defense (final / best epoch)",
        "",
        "Rows: the exploiter's defense on its training images; columns: the training data (clean, or a variant's "
        "protected files). Lower is better protection; the clean column is what the defense costs on clean data.",
        "",
        "| defense | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for d in args.defense_list:
        cells = []
        for c in columns:
            m = matrix.get((d, c)) or {}
            cells.append(f"{fmt(m.get('dsc'), 3)} / {fmt(m.get('dsc_best'), 3)}")
        lines.append(f"| {defense_label(d, args)} | " + " | ".join(cells) + " |")
    quality = ["-"]
    for c in columns[1:]:
        f = files.get(c) or {}
        quality.append("n/a" if f.get("psnr") is None else f"{f['psnr']:.2f} dB / {fmt(f.get('ssim'), 4)}")
    lines.append("| PSNR / SSIM of the files | " + " | ".join(quality) + " |")
    _heatmap(out / "heatmap.png", [defense_label(d, args) for d in args.defense_list], args.defense_list, columns,
             matrix)
    return lines + ["", "![final DSC](heatmap.png)"]


def _heatmap(
    path: Path, labels: list[str], rows: list[str], columns: list[str], matrix: dict[tuple[str, str], dict]
) -> None:
    """A heat-map of the final DSC (white 0 -> red 1) with the values written in the cells, rows named by
    ``labels``, saved atomically."""
    from PIL import Image, ImageDraw

    from monai_umed.utils import atomic_write_bytes

    cw, ch, left, top = 130, 28, 190, 36
    img = Image.new("RGB", (left + cw * len(columns), top + ch * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for j, c in enumerate(columns):
        draw.text((left + j * cw + 4, 10), c[:20], fill="black")
    for i, (d, label) in enumerate(zip(rows, labels)):
        draw.text((4, top + i * ch + 8), label[:28], fill="black")
        for j, c in enumerate(columns):
            v = (matrix.get((d, c)) or {}).get("dsc")
            x0, y0 = left + j * cw, top + i * ch
            colour = (230, 230, 230) if v is None else (255, int(255 * (1 - v)), int(255 * (1 - v)))
            draw.rectangle([x0, y0, x0 + cw - 2, y0 + ch - 2], fill=colour)
            draw.text((x0 + 8, y0 + 8), "n/a" if v is None else f"{v:.3f}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_tables(
    out: Path, args: argparse.Namespace, rows: list[dict], clean: dict, commands: list[str],
    matrix: dict[tuple[str, str], dict] | None = None,
) -> None:
    """``table.md`` and ``table.csv`` (atomic writes); with defenses other than ``none``, also the defense matrix
    (:func:`write_matrix`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in [{"variant": "clean", "description": "no protection", **clean}, *rows]:
        w.writerow(["" if r.get(c) is None else r[c] for c in CSV_COLUMNS])
    atomic_write_text(out / "table.csv", buf.getvalue())

    split = read_json(out / "split.json") or {}
    lines = [
        "# Protector comparison",
        "",
        f"Dataset `{Path(args.dataset_dir).resolve()}`: {split.get('numTraining')} training / {split.get('numTest')}"
        f" test cases (seed {args.seed}). Exploiter `{args.exploiter}` trained {args.max_epochs} epochs at "
        f"{args.image_size}x{args.image_size}, batch {args.batch_size}, Adam lr {args.exploiter_lr:g}, on each "
        "variant's protected files; DSC / Jaccard on the CLEAN test images at the final epoch, best DSC over the "
        "epochs with its epoch (what an exploiter that stops early could reach). PSNR / SSIM of the written files "
        "(protect's manifest).",
        "",
        "| variant | DSC / Jaccard | best DSC (epoch) | PSNR / SSIM | protect time |",
        "| --- | --- | --- | --- | --- |",
        f"| clean (no protection) | {fmt(clean.get('dsc'), 3)} / {fmt(clean.get('jaccard'), 3)} | "
        f"{fmt(clean.get('dsc_best'), 3)} ({clean.get('dsc_best_epoch')}) | - | - |",
    ]
    for r in rows:
        psnr = "n/a" if r.get("psnr") is None else f"{r['psnr']:.2f} dB"
        t = r.get("protect_seconds")
        lines.append(
            f"| {r['variant']}: {r['description']} | {fmt(r.get('dsc'), 3)} / {fmt(r.get('jaccard'), 3)} | "
            f"{fmt(r.get('dsc_best'), 3)} ({r.get('dsc_best_epoch')}) | {psnr} / {fmt(r.get('ssim'), 4)} | "
            f"{'n/a' if t is None else f'{t:.0f} s'} |"
        )
    if matrix is not None and args.defense_list != ["none"]:
        files = {r["variant"]: {"psnr": r.get("psnr"), "ssim": r.get("ssim")} for r in rows}
        lines += [""] + write_matrix(out, args, matrix, files)
    lines += ["", "## Commands", ""] + [f"- `{c}`" for c in commands]
    lines += ["", f"Comparison command: `{shlex.join(['python', *sys.argv])}`", ""]
    atomic_write_text(out / "table.md", "\n".join(lines))


def metrics_of(run_dir: Path) -> dict:
    m = read_json(run_dir / "metrics.json") or {}
    return {k: m.get(k) for k in ("dsc", "jaccard", "dsc_best", "dsc_best_epoch")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir).resolve()
    dataset = Path(args.dataset_dir).resolve()
    from monai_umed.utils import check_output_dir

    check_output_dir(dataset, out)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out / "steps.json")
    split_file = out / "split.json"
    commands: list[str] = []
    t_start = time.perf_counter()

    def step(key: str, cmd: list[str], done: bool, before=None) -> bool:
        """Run ``cmd`` unless ``--reuse`` and ``done`` with the same command; True when it ran."""
        commands.append(display_command(cmd))
        if args.reuse and done and steps.matches(key, cmd):
            log(f"{key} ... reused")
            return False
        log(f"{key} ... running")
        if before is not None:
            before()
        steps.record(key, cmd, run_step(cmd, out / "logs" / f"{key}.log", args.quiet, out))
        return True

    split_cmd = bundle_command(
        "split", "split.json",
        {"dataset_dir": dataset, "output_file": split_file, "test_fraction": args.test_fraction, "seed": args.seed,
         "stems": str(Path(args.stems).resolve()) if args.stems else None},
    )
    split_data = read_json(split_file)
    rerun = step("split", split_cmd, isinstance(split_data, dict) and "training" in split_data)

    matrix: dict[tuple[str, str], dict] = {}
    for d in args.defense_list:
        clean_dir = out / run_name("clean", d)
        cmd = exploit_command(args, dataset, split_file, None, clean_dir, d)
        step(run_name("clean", d), cmd, not rerun and (clean_dir / "metrics.json").is_file())
        matrix[(d, "clean")] = metrics_of(clean_dir)
    clean = matrix.get(("none", "clean"), {})

    rows: list[dict] = []
    for variant in args.variant_list:
        folder = variant_dir(variant)
        protect_dir = out / folder / "protect"
        cmd = protect_command(args, variant, dataset, split_file, protect_dir)
        ran = step(f"{folder}.protect", cmd, not rerun and protect_complete(protect_dir),
                   before=lambda d=protect_dir: move_aside(d))
        for d in args.defense_list:
            run_dir = out / folder / run_name("exploit", d)
            cmd = exploit_command(args, dataset, split_file, protect_dir / "protected", run_dir, d)
            step(f"{folder}.{run_name('exploit', d)}", cmd, not (rerun or ran) and (run_dir / "metrics.json").is_file())
            matrix[(d, variant)] = metrics_of(run_dir)
        exploit_dir = out / folder / "exploit"
        summary = (read_json(protect_dir / "manifest.json") or {}).get("summary") or {}
        rows.append({
            "variant": variant, "description": variant_description(variant), **metrics_of(exploit_dir),
            "psnr": summary.get("psnr_mean"), "ssim": summary.get("ssim_mean"), "linf_max": summary.get("linf_max"),
            "protect_seconds": steps.seconds(f"{folder}.protect"),
            "exploit_seconds": steps.seconds(f"{folder}.exploit"),
        })
        write_tables(out, args, rows, clean, commands, matrix)  # a partial table after every variant
    write_tables(out, args, rows, clean, commands, matrix)
    log(f"done in {time.perf_counter() - t_start:.1f} s: {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
