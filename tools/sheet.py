"""Contact sheets for the bench: rows of images (ground truth, the model, the compared model) at a few
frames spread over the path, the invented pixels outlined, so a person can look at what the numbers say."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import metrics

OUTLINE = (255, 0, 255)  # magenta: rare in the scenes
SECOND = (0, 255, 255)   # cyan: a second outline (the actors)
MIN_CELL_WIDTH = 256     # small frames are enlarged (nearest) to at least this width


def spread(order, count=6, skip=()):
    """`count` frames spread evenly over the path (first and last included), leaving out `skip`."""
    frames = [n for n in order if n not in skip]
    if len(frames) <= count:
        return frames
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]


def outline(mask):
    """[H, W] bool: the inner edge of the mask (pixels of the mask next to one outside it)."""
    m = np.asarray(mask, bool)
    return m & ~metrics.erode(m, 1)


def _cell(img, mask, scale, second=None):
    a = (np.clip(np.asarray(img, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    if second is not None:
        a = a.copy()
        a[outline(second)] = SECOND
    if mask is not None:
        a = a.copy()
        a[outline(mask)] = OUTLINE
    if scale > 1:
        a = a.repeat(scale, 0).repeat(scale, 1)
    return Image.fromarray(a)


def mask_row(images, masks, frames, dim=0.2):
    """{frame: image} with everything outside the frame's mask dimmed: the invented pixels at a glance."""
    return {n: np.where(masks[n][..., None], images[n], dim * np.asarray(images[n])) for n in frames}


def contact_sheet(path, frames, rows, masks, title="", second=None):
    """Write a PNG: one column per frame, one row per (label, {frame: [H, W, 3] image in 0..1}); masks
    {frame: [H, W] bool} are outlined on every row and their share of the frame printed above each column;
    second {frame: [H, W] bool} (the actors) is outlined too, in cyan, under the first outline."""
    H, W = np.asarray(rows[0][1][frames[0]]).shape[:2]
    scale = max(1, -(-MIN_CELL_WIDTH // W))
    cw, ch = W * scale, H * scale
    font = ImageFont.load_default(size=13)
    left, top, gap = 150, 40, 4
    sheet = Image.new("RGB", (left + len(frames) * (cw + gap), top + len(rows) * (ch + gap)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill=(230, 230, 230), font=font)
    for j, n in enumerate(frames):
        mask = masks.get(n)
        share = f", {100 * mask.mean():.0f} % invented" if mask is not None else ""
        draw.text((left + j * (cw + gap), top - 17), f"frame {n}{share}", fill=(200, 200, 200), font=font)
    for i, (label, images) in enumerate(rows):
        y = top + i * (ch + gap)
        for k, line in enumerate(label.split("\n")):
            draw.text((6, y + 4 + 16 * k), line, fill=(230, 230, 230), font=font)
        for j, n in enumerate(frames):
            sheet.paste(_cell(images[n], masks.get(n), scale, (second or {}).get(n)), (left + j * (cw + gap), y))
    sheet.save(path, optimize=True)
    return path
