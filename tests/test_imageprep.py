"""imageprep: pictures of any kind → MNIST-style 28×28 white-on-black, centred by mass."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_hpc.errors import UserError
from mnist_hpc.training import imageprep
from mnist_hpc.training.imageprep import ink_is_dark, load_image, prepare, to_mnist
from tests.paths import ROOT

SHARED_MNIST = ROOT.parent / "shared/datasets/MNIST/raw/t10k-images-idx3-ubyte.gz"


def mnist_test_images():
    """The MNIST test images file: under $MNIST_HPC_DATA_DIR (unpacked or the archive), else the
    shared datasets folder beside the checkout; None when neither has it."""
    roots = [Path(d) / "MNIST" / "raw" for d in [os.environ.get("MNIST_HPC_DATA_DIR")] if d]
    for raw in [*roots, SHARED_MNIST.parent]:
        for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
            if (raw / name).is_file():
                return raw / name
    return None


def centre_of_mass(a):
    a = np.asarray(a, dtype=np.float64)
    m = a.sum()
    return (a.sum(axis=1) @ np.arange(a.shape[0])) / m, (a.sum(axis=0) @ np.arange(a.shape[1])) / m


def ink_bbox(a):
    rows = np.nonzero(a.any(axis=1))[0]
    cols = np.nonzero(a.any(axis=0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def page(size=(1000, 800), paper=235, ink=25, draw=None, mode="L", noise=0.0, seed=0):
    """A light page (w×h) with dark strokes drawn by ``draw(ImageDraw, fill)``."""
    img = Image.new("L", size, paper)
    draw(ImageDraw.Draw(img), ink)
    if noise:
        a = np.asarray(img, dtype=np.float64)
        a = a + np.random.default_rng(seed).normal(0, noise, a.shape)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return img.convert(mode)


def draw_one(d, fill):  # a slightly slanted "1", off-centre on the page
    d.line([(560, 180), (520, 640)], fill=fill, width=40)


def draw_seven(d, fill):
    d.line([(250, 150), (600, 150)], fill=fill, width=35)
    d.line([(600, 150), (380, 650)], fill=fill, width=35)


def assert_mnist_like(out):
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0, 0] == 0 and out[:, 0].max() == 0 and out[0].max() == 0  # black background
    assert out.max() == 255  # white ink
    h, w = ink_bbox(out)
    assert max(h, w) <= 20 + 1  # 20 px box (+1: antialiased edge after a whole-pixel paste)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)


def test_large_dark_on_light_page_becomes_white_on_black_and_centred():
    out = to_mnist(page(draw=draw_one))
    assert_mnist_like(out)
    h, w = ink_bbox(out)
    assert h >= 19 and w < 12  # tall and thin, aspect ratio kept


def test_asymmetric_digit_is_centred_by_mass_not_by_box():
    out = to_mnist(page(draw=draw_seven))
    assert_mnist_like(out)
    rows = np.nonzero(out.any(axis=1))[0]
    cols = np.nonzero(out.any(axis=0))[0]
    box_centre = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2)
    # The 7's mass leans to the top: its box centre sits below the mass centre (14).
    assert box_centre[0] > 14


def test_noisy_jpeg_photo_with_a_speck_of_dust(tmp_path):
    def draw(d, fill):
        draw_seven(d, fill)
        d.ellipse([920, 740, 930, 750], fill=fill)  # dust in a corner

    img = page(draw=draw, paper=200, ink=60, noise=6.0)
    # a lighting gradient across the page, as on a phone photo
    a = np.asarray(img, dtype=np.float64) * np.linspace(0.85, 1.05, img.width)[None, :]
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB").save(path, quality=80)
    out = prepare(path)
    assert_mnist_like(out)
    # the speck was trimmed: the 7 fills the 20-px box on its own
    assert max(ink_bbox(out)) >= 19
    assert out[24:, 22:].max() < 40  # nothing bright in the bottom-right corner


def test_white_on_black_is_not_inverted():
    light_on_dark = page(paper=10, ink=240, draw=draw_one)
    assert not ink_is_dark(np.asarray(light_on_dark, dtype=float))
    assert_mnist_like(to_mnist(light_on_dark))


@pytest.mark.parametrize(
    "paper, ink, dark",
    [
        (235, 25, True),  # pen on white paper
        (110, 20, True),  # dim photo: paper below mid-grey, ink still darker
        (20, 240, False),  # chalk on a blackboard / MNIST itself
        (140, 250, False),  # light ink on a mid-grey background
    ],
)
def test_inversion_decision_follows_the_ink_not_the_absolute_brightness(paper, ink, dark):
    img = page(
        size=(200, 160),
        paper=paper,
        ink=ink,
        draw=lambda d, f: d.line([(100, 20), (100, 140)], fill=f, width=8),
    )
    assert ink_is_dark(np.asarray(img, dtype=float)) is dark
    assert_mnist_like(to_mnist(img))


def test_inverted_pages_give_the_same_digit():
    a = to_mnist(page(draw=draw_seven, paper=235, ink=25)).astype(int)
    b = to_mnist(page(draw=draw_seven, paper=25, ink=235)).astype(int)
    assert np.abs(a - b).max() <= 2


def mnist_like_digit():
    """A 28×28 white-on-black digit already normalised the MNIST way."""
    img = Image.new("L", (28 * 8, 28 * 8), 0)
    d = ImageDraw.Draw(img)
    d.line([(60, 40), (160, 40), (100, 200)], fill=255, width=22, joint="curve")
    small = to_mnist(img)  # normalise once (20-px box, centred)
    return small


def test_mnist_like_input_comes_out_nearly_unchanged():
    digit = mnist_like_digit()
    again = to_mnist(Image.fromarray(digit))
    assert np.abs(again.astype(int) - digit.astype(int)).mean() < 1.0


@pytest.mark.skipif(
    mnist_test_images() is None,
    reason="MNIST test images not available (set MNIST_HPC_DATA_DIR to a folder holding MNIST/raw)",
)
def test_real_mnist_images_come_out_nearly_unchanged():
    path = mnist_test_images()
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:300]
    diffs = np.array([np.abs(to_mnist(Image.fromarray(a)).astype(int) - a).mean() for a in images])
    assert np.median(diffs) < 1.0
    assert (diffs < 2.0).mean() > 0.97  # the rest: half-pixel centre-of-mass ties, shifted by 1


def test_rgba_with_transparency_is_flattened_onto_white():
    rgb = page(draw=draw_seven, mode="RGB")
    # the same strokes as black ink on a fully transparent background
    alpha = 255 - np.asarray(page(draw=draw_seven, paper=255, ink=0), dtype=np.uint8)
    rgba = np.zeros((rgb.height, rgb.width, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    out = to_mnist(Image.fromarray(rgba))  # RGBA mode
    assert_mnist_like(out)
    assert np.abs(out.astype(int) - to_mnist(rgb).astype(int)).mean() < 3


def test_light_ink_on_transparent_background_is_still_found():
    alpha = 255 - np.asarray(
        page(
            size=(300, 300),
            draw=lambda d, f: d.line([(150, 40), (150, 260)], fill=f, width=20),
            paper=255,
            ink=0,
        ),
        dtype=np.uint8,
    )
    rgba = np.full((300, 300, 4), 255, dtype=np.uint8)
    rgba[..., 3] = alpha
    assert_mnist_like(to_mnist(Image.fromarray(rgba)))


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "CMYK", "LA"])
def test_other_modes(mode, tmp_path):
    img = page(size=(300, 260), draw=lambda d, f: d.line([(140, 30), (170, 230)], fill=f, width=18))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = tmp_path / f"x.{'tiff' if mode == 'CMYK' else 'png'}"
    img.save(path)
    assert_mnist_like(prepare(path))


def test_thin_pen_strokes_are_thickened_towards_mnist_width():
    out = to_mnist(
        page(size=(1200, 1200), draw=lambda d, f: d.line([(600, 100), (560, 1100)], fill=f, width=4))
    )
    assert_mnist_like(out)
    assert imageprep.stroke_width(out) >= 1.0
    assert (out > 128).sum() >= 20


def test_small_drawing_in_a_big_frame_is_scaled_up():
    img = Image.new("L", (500, 500), 255)
    ImageDraw.Draw(img).line([(250, 240), (252, 262)], fill=0, width=3)
    out = to_mnist(img)
    assert_mnist_like(out)
    assert ink_bbox(out)[0] >= 19


# --- errors ---------------------------------------------------------------------------------


def test_non_image_file_raises_user_error_with_the_path(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, not an image\n")
    with pytest.raises(UserError, match=r"notes\.txt: not an image \(unknown format\)"):
        load_image(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.png: not an image \(empty file\)"):
        load_image(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(UserError, match=r"not an image \(it is a directory\)") as err:
        load_image(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file(tmp_path, fmt):
    p = tmp_path / f"cut.{fmt}"
    page(size=(400, 300), draw=draw_one_small, noise=20).save(p, format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"cut\.{fmt}: not an image \(truncated or corrupt"):
        load_image(p)


def draw_one_small(d, fill):
    d.line([(200, 40), (200, 260)], fill=fill, width=10)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_image_raises_user_error_with_the_path(tmp_path, value):
    p = tmp_path / "blank.png"
    Image.new("RGB", (640, 480), (value, value, value)).save(p)
    with pytest.raises(UserError, match=r"blank\.png: the image is blank"):
        prepare(p)


def test_slightly_noisy_blank_page_is_blank(tmp_path):
    p = tmp_path / "paper.jpg"
    page(size=(800, 600), draw=lambda d, f: None, noise=2.0).save(p, quality=90)
    with pytest.raises(UserError, match="the image is blank"):
        prepare(p)


def test_error_messages_are_one_line(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(UserError) as err:
        load_image(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def test_exif_rotation_is_applied(tmp_path):
    img = page(size=(400, 200), draw=lambda d, f: d.line([(50, 100), (350, 100)], fill=f, width=12))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    p = tmp_path / "phone.jpg"
    img.convert("RGB").save(p, exif=exif)
    loaded = load_image(p)
    assert loaded.size == (200, 400)
    h, w = ink_bbox(to_mnist(loaded))
    assert h > w  # the horizontal stroke became vertical
