"""Draws the two bundled sample images (synthetic scenes; no photos can be shipped).

Run once; the JPEGs are committed under src/ovseg_ros/assets/.
"""

from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "ovseg_ros" / "assets"


def noise(shape, rng, amount=12):
    return rng.normal(0, amount, shape)


def warehouse(rng) -> np.ndarray:
    h, w = 480, 640
    img = np.zeros((h, w, 3), np.float32)
    img[:200] = (170, 175, 180)  # wall
    img[200:] = (120, 115, 105)  # floor
    img[:40] = (210, 210, 205)  # ceiling strip
    for x in range(0, w, 160):  # shelving uprights and beams
        cv2.rectangle(img, (x + 10, 60), (x + 22, 260), (40, 80, 200), -1)
    for y in (110, 180):
        cv2.rectangle(img, (0, y), (w, y + 10), (230, 120, 30), -1)
    cv2.rectangle(img, (60, 300), (260, 330), (150, 110, 70), -1)  # pallet
    for i in range(3):
        cv2.rectangle(img, (70 + i * 62, 220), (125 + i * 62, 300), (160, 120, 80), -1)  # boxes
        cv2.rectangle(img, (70 + i * 62, 220), (125 + i * 62, 300), (110, 80, 50), 2)
    cv2.rectangle(img, (360, 250), (520, 380), (20, 170, 230), -1)  # forklift body
    cv2.rectangle(img, (330, 180), (345, 380), (40, 40, 40), -1)  # mast
    cv2.rectangle(img, (300, 340), (360, 350), (60, 60, 60), -1)  # forks
    for cx in (390, 490):
        cv2.circle(img, (cx, 385), 28, (25, 25, 25), -1)
    cv2.circle(img, (575, 250), 18, (180, 140, 120), -1)  # person
    cv2.rectangle(img, (558, 268), (592, 350), (230, 120, 20), -1)
    cv2.rectangle(img, (560, 350), (574, 420), (50, 50, 90), -1)
    cv2.rectangle(img, (578, 350), (592, 420), (50, 50, 90), -1)
    img += noise(img.shape, rng)
    return np.clip(img, 0, 255).astype(np.uint8)


def street(rng) -> np.ndarray:
    h, w = 480, 640
    img = np.zeros((h, w, 3), np.float32)
    sky = np.linspace(1.0, 0.75, 220)[:, None, None] * np.array([200, 220, 250], np.float32)
    img[:220] = sky
    img[220:] = (90, 90, 95)  # road
    img[220:260] = (170, 165, 160)  # sidewalk
    for x0, x1, top, col in ((0, 150, 60, (150, 110, 100)), (150, 300, 100, (190, 180, 160)), (460, 640, 40, (120, 120, 140))):
        cv2.rectangle(img, (x0, top), (x1, 225), col, -1)
        for y in range(top + 20, 210, 40):
            for x in range(x0 + 15, x1 - 20, 40):
                cv2.rectangle(img, (x, y), (x + 18, y + 22), (60, 80, 110), -1)
    for x in range(0, w, 60):  # lane marking
        cv2.rectangle(img, (x, 380), (x + 35, 388), (230, 230, 230), -1)
    cv2.circle(img, (390, 150), 55, (40, 120, 40), -1)  # tree
    cv2.rectangle(img, (382, 200), (398, 262), (70, 50, 30), -1)
    cv2.rectangle(img, (120, 300), (330, 370), (30, 30, 180), -1)  # car
    cv2.rectangle(img, (165, 260), (290, 305), (30, 30, 160), -1)
    for cx in (165, 290):
        cv2.circle(img, (cx, 372), 24, (20, 20, 20), -1)
    cv2.circle(img, (520, 255), 14, (170, 130, 110), -1)  # pedestrian
    cv2.rectangle(img, (507, 270), (533, 330), (200, 40, 40), -1)
    cv2.rectangle(img, (509, 330), (531, 380), (40, 40, 60), -1)
    img += noise(img.shape, rng)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in (("warehouse", warehouse), ("street", street)):
        cv2.imwrite(str(OUT / f"{name}.jpg"), cv2.cvtColor(draw(rng), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(OUT / f"{name}.jpg")


if __name__ == "__main__":
    main()
