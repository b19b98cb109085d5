"""Intake: the files a GLAM collection holds, decoded, verified and made into derivatives.

`scan(directory)` lists a folder's files (no symlink leaves it), `process_file(job)` turns
one master into its derivative(s), and `run_jobs` runs many in a process pool. The
catalogue and Label Studio side live in `collection.py`; this module never writes outside
the derivative path a job names.

Formats and how they are read:

- JPEG, PNG, TIFF (8/16-bit; none/LZW/Deflate/JPEG; pages), WebP, GIF: libvips (pyvips),
  whose `thumbnail` streams the file (JPEG shrink-on-load, TIFF strips, tiles, pyramids):
  memory stays bounded for large masters;
- JPEG 2000: Pillow (OpenJPEG), decoded at a reduced resolution level (bounded too);
- BMP: Pillow, decoded whole (BMP masters are small). libvips in pyvips-binary reads
  neither JPEG 2000 nor BMP.

Every file is decoded in full at intake (`fail_on="error"` in libvips, `load()` in Pillow),
so a truncated file is rejected here, never later. EXIF orientation is applied; CMYK,
16-bit, palette, grey+alpha and alpha images become 8-bit sRGB (an embedded ICC profile is
honoured, alpha is flattened on white); greyscale stays one channel. The derivative is a
PNG card whose longest side is at most `settings.card_size` (never enlarged): the image
Label Studio shows and the model's input. A master over `settings.intake_max_pixels`
pixels is rejected before decoding (the decompression-bomb limit).

Measured on a 12000x9000 TIFF (bench/bench_intake.py): libvips makes the card with a small
fraction of the memory Pillow needs to decode the master whole; hence libvips for the
formats it reads.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

VIPS_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".gif"}
PILLOW_SUFFIXES = {".jp2", ".j2k", ".jpf", ".jpx", ".bmp"}
IMAGE_SUFFIXES = VIPS_SUFFIXES | PILLOW_SUFFIXES
MULTIPAGE_SUFFIXES = {".tif", ".tiff"}
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class RejectedFile(Exception):
    """A file intake cannot take; the message is the reason."""


@dataclass
class Outcome:
    """What intake did with one file (or one page of it)."""

    file: str  # path relative to the folder (or the source URI)
    status: str  # added | changed | unchanged | rejected | skipped
    reason: str = ""
    item_id: str = ""
    page: int = 0
    info: dict = field(default_factory=dict)


def is_safe_id(item_id: str) -> bool:
    """Ids are file names under the home: letters, digits, `.`, `_`, `-`; no `..`."""
    return bool(SAFE_ID.match(item_id)) and ".." not in item_id


def safe_id(text: str) -> str:
    """A safe id made from any text (a path stem, a canvas label)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    while ".." in out:
        out = out.replace("..", ".")
    return out.strip("-._")[:200] or "item"


# --- the folder -----------------------------------------------------------------------------


@dataclass
class Found:
    """One image file of a folder, from a single directory listing (no extra stat)."""

    path: str  # absolute; a link inside the folder is replaced by its target
    rel: str  # relative to the folder, with `/`
    size: int
    mtime_ns: int

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.rel)[1].lower()

    @property
    def stem(self) -> str:
        return os.path.splitext(self.rel)[0]


def scan(directory: Path) -> tuple[list[Found], list[Outcome]]:
    """Image files under `directory` (sorted by path) and the outcomes of files refused.

    Symlinks are followed only when they stay inside `directory`; linked folders are not
    entered; hidden files are ignored; files with other suffixes are listed as skipped.
    One `scandir` per folder and one `stat` per file: a re-run costs about a listing.
    """
    root = str(directory.resolve())
    found, refused = [], []
    stack = [root]
    while stack:
        here = stack.pop()
        with os.scandir(here) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = entry.path[len(root) + 1 :]  # entries of `root` start with `root/`
                path = entry.path
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if entry.is_dir():
                        refused.append(Outcome(rel, "skipped", "a linked folder (not followed)"))
                        continue
                    if not Path(target).is_relative_to(root):
                        refused.append(
                            Outcome(
                                rel, "rejected", f"a symlink leading outside the folder ({target})"
                            )
                        )
                        continue
                    if not os.path.isfile(target):
                        refused.append(Outcome(rel, "rejected", "a symlink to no file"))
                        continue
                    path = target
                elif entry.is_dir():
                    stack.append(entry.path)
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                    refused.append(
                        Outcome(rel, "skipped", f"not an image file type ({Path(rel).suffix})")
                    )
                    continue
                stat = entry.stat()
                found.append(Found(path, rel, stat.st_size, stat.st_mtime_ns))
    found.sort(key=lambda f: f.rel)
    refused.sort(key=lambda o: o.file)
    return found, refused


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- decoding -----------------------------------------------------------------------------


@dataclass
class Limits:
    card_size: int
    max_pixels: int
    pages: str  # first | each


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise RejectedFile(
            f"{width}x{height} = {width * height:,} pixels is over the decompression-bomb "
            f"limit of {limits.max_pixels:,} (FLYWHEEL_INTAKE_MAX_PIXELS)"
        )


def _vips_pages(path: Path, limits: Limits) -> tuple[int, int, int]:
    """(width, height, pages) from the header, without decoding pixels."""
    import pyvips

    try:
        head = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
    except pyvips.Error as exc:
        raise RejectedFile(f"not a readable image ({_vips_message(exc)})") from None
    _check_pixels(head.width, head.height, limits)
    pages = head.get("n-pages") if head.get_typeof("n-pages") else 1
    return head.width, head.height, int(pages)


def _vips_message(exc) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[1:] or lines)[:300]


def _vips_card(path: Path, page: int, limits: Limits):
    """The sRGB 8-bit card of one page, made by libvips without a full-size decode."""
    import numpy as np
    import pyvips
    from PIL import Image

    options = f"page={page}" if page else ""
    try:
        if page:
            head = pyvips.Image.new_from_file(f"{path}[{options}]", access="sequential")
            _check_pixels(head.width, head.height, limits)
        img = pyvips.Image.thumbnail(
            f"{path}[{options}]" if options else str(path),
            limits.card_size,
            height=limits.card_size,
            size="down",
            fail_on="error",
        )
        if img.interpretation in ("cmyk",) or img.get_typeof("icc-profile-data"):
            img = img.icc_transform("srgb", embedded=True, intent="relative")
        if img.hasalpha():
            img = img.flatten(background=[65535 if img.format == "ushort" else 255])
        if img.interpretation in ("rgb16", "grey16") or img.format == "ushort":
            img = img.colourspace("b-w" if img.bands == 1 else "srgb")
        elif img.bands >= 3 and img.interpretation not in ("srgb", "rgb"):
            img = img.colourspace("srgb")
        if img.bands > 3:
            img = img.extract_band(0, n=3)
        if img.format != "uchar":
            img = img.cast("uchar")
        data = img.write_to_memory()  # runs the pipeline: the whole file is decoded here
    except pyvips.Error as exc:
        raise RejectedFile(f"not a readable image ({_vips_message(exc)})") from None
    array = np.ndarray(buffer=data, dtype=np.uint8, shape=[img.height, img.width, img.bands])
    return Image.fromarray(
        array[:, :, 0] if img.bands == 1 else array, "L" if img.bands == 1 else "RGB"
    )


def to_srgb(img):
    """A decoded PIL image as 8-bit sRGB ("RGB") or grey ("L"), alpha flattened on white."""
    import io

    import numpy as np
    from PIL import Image, ImageCms

    icc = img.info.get("icc_profile")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "F" else max(float(array.max()), 1.0)
        img = Image.fromarray(np.clip(array * 255.0 / top + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        grey = img.mode.startswith("L")
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(back, rgba).convert("L" if grey else "RGB")
    if icc and img.mode in ("RGB", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            img = ImageCms.profileToProfile(
                img, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError):
            pass  # an unusable profile: fall back to treating the values as sRGB
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img


def _pillow_pages(path: Path, limits: Limits) -> tuple[int, int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            _check_pixels(im.width, im.height, limits)
            return im.width, im.height, int(getattr(im, "n_frames", 1))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise RejectedFile(f"not a readable image ({exc})") from None


def _pillow_card(path: Path, page: int, limits: Limits):
    """The card of one page by Pillow; JPEG 2000 is decoded at a reduced resolution level."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # the limit is checked above, with our own message
    try:
        with Image.open(path) as im:
            _check_pixels(im.width, im.height, limits)
            if page:
                im.seek(page)
            if im.format == "JPEG2000":
                level = 0
                while max(im.size) >> (level + 1) >= limits.card_size:
                    level += 1
                im.reduce = level
            elif im.format == "JPEG":
                im.draft(im.mode, (limits.card_size, limits.card_size))
            im.load()
            img = ImageOps.exif_transpose(im)
            img = to_srgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise RejectedFile(f"not a readable image ({exc})") from None
    img.thumbnail((limits.card_size, limits.card_size), Image.Resampling.LANCZOS)
    return img


def pages_of(path: Path, limits: Limits) -> tuple[int, int, int]:
    """(width, height, pages) of a master; RejectedFile when it cannot be taken."""
    if path.stat().st_size == 0:
        raise RejectedFile("an empty file")
    if path.suffix.lower() in VIPS_SUFFIXES:
        return _vips_pages(path, limits)
    return _pillow_pages(path, limits)


def make_card(path: Path, page: int, limits: Limits):
    """The card (PIL image, 8-bit sRGB or grey) of one page of a master."""
    if path.suffix.lower() in VIPS_SUFFIXES:
        return _vips_card(path, page, limits)
    return _pillow_card(path, page, limits)


def card_from_bytes(data: bytes, suffix: str, limits: Limits, scratch: Path):
    """The card of an image given as bytes (a IIIF fetch): written to `scratch`, then read."""
    if not data:
        raise RejectedFile("an empty image")
    tmp = scratch.with_suffix(suffix)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    try:
        pages_of(tmp, limits)
        return make_card(tmp, 0, limits)
    finally:
        tmp.unlink(missing_ok=True)


def perceptual_hash(card) -> str:
    """The 64-bit DCT perceptual hash (imagehash.phash) of a card, as 16 hex digits."""
    import imagehash

    return str(imagehash.phash(card.convert("L")))


def save_card(card, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    card.save(tmp, format="PNG", compress_level=1)  # fast; cards are small
    tmp.replace(dest)


# --- one job per master ---------------------------------------------------------------------


@dataclass
class Job:
    """One master to take: where it is, its base item id, where its cards go."""

    source: str  # absolute path of the master
    rel: str  # its path relative to the folder (for messages)
    item_id: str
    card_dir: str
    limits: Limits
    copy_to: str = ""  # copy mode: the master is copied here first


def page_item_id(item_id: str, page: int, pages: int, limits: Limits) -> str:
    return f"{item_id}-p{page + 1:03d}" if limits.pages == "each" and pages > 1 else item_id


def process_file(job: Job) -> list[Outcome]:
    """Decode, verify and derive one master; one outcome per item it makes (or a rejection)."""
    import shutil

    path = Path(job.source)
    try:
        width, height, pages = pages_of(path, job.limits)
        multipage = path.suffix.lower() in MULTIPAGE_SUFFIXES and job.limits.pages == "each"
        wanted = range(pages) if multipage else range(1)
        cards = [(page, make_card(path, page, job.limits)) for page in wanted]
        digest = sha256_file(path)
    except RejectedFile as exc:
        return [Outcome(job.rel, "rejected", str(exc), job.item_id)]
    except OSError as exc:
        return [Outcome(job.rel, "rejected", f"cannot read the file ({exc.strerror or exc})")]
    source = str(path)
    if job.copy_to:
        copy = Path(job.copy_to)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if not copy.exists() or sha256_file(copy) != digest:
            shutil.copyfile(path, copy)
        source = str(copy)
    stat = path.stat()
    out = []
    for page, card in cards:
        item_id = page_item_id(job.item_id, page, len(cards), job.limits)
        dest = Path(job.card_dir) / f"{item_id}.png"
        save_card(card, dest)
        out.append(
            Outcome(
                job.rel,
                "added",
                item_id=item_id,
                page=page,
                info={
                    "image_path": str(dest),
                    "source": source,
                    "image_sha256": digest,
                    "source_size": stat.st_size,
                    "source_mtime_ns": stat.st_mtime_ns,
                    "phash": perceptual_hash(card),
                    "width": width,
                    "height": height,
                },
            )
        )
    return out


def _worker_init() -> None:
    import pyvips

    pyvips.cache_set_max(0)  # bounded memory: no cache of decoded regions between files
    pyvips.concurrency_set(1)  # the pool gives the parallelism


def workers(settings) -> int:
    return settings.intake_workers or os.cpu_count() or 1


def run_jobs(jobs: list[Job], n_workers: int, progress=None) -> list[list[Outcome]]:
    """`process_file` over the jobs, in a process pool when there are enough of them."""
    if n_workers <= 1 or len(jobs) < 16:
        results = []
        for job in jobs:
            results.append(process_file(job))
            if progress:
                progress()
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # libvips threads do not survive fork
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_worker_init) as pool:
        results = []
        for result in pool.map(process_file, jobs, chunksize=max(1, len(jobs) // (n_workers * 8))):
            results.append(result)
            if progress:
                progress()
        return results
