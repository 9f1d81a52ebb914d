"""ADE20K panoptic (ADEChallengeData2016, 150 classes) as EOV-Seg and FC-CLIP evaluate
it zero-shot: the class names with their published synonyms, and a converter to COCO
panoptic format.

    ovseg-prepare-ade20k datasets/ADEChallengeData2016 --split validation

The names are FC-CLIP's `fcclip/data/datasets/ade20k_150_with_prompt_eng.txt` (bytedance/
fc-clip @ 2b0bbe21, Apache-2.0; EOV-Seg uses the same file), category ids 0..149 as the
published registration has them; a class is a thing where the ADE instance annotations
have it (the SceneParse150 column of ADE's `ade20k_instance_catid_mapping.txt`, as
Mask2Former's datasets/prepare_ade20k_pan_seg.py decides it, facebookresearch/Mask2Former
@ 9b0651c6): 100 things, 50 stuff.

The converter follows that script's rules, so that PQ compares with the published figures:
one segment per stuff class in the semantic annotation (`annotations/`, 1-based, 0 =
none), pasted first; then one per instance of the instance annotation
(`annotations_instance/`: R = the instance class + 1, G = the instance, 0 = none), its
class through INSTANCE_CLASS, pasted over the stuff; pixels of a thing class without an
instance, and of no class, are void (0). A stuff segment's `area` and `bbox` are those it
had before the things were pasted over it, as the script writes them (panopticapi takes
ground-truth areas from the JSON, so this enters PQ's unions). Segment ids are
deterministic here (the script draws colours at random; PQ does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ADE20K_CLASSES: tuple[tuple[str, bool], ...] = (  # (names, is_thing), by category id 0..149
    ('wall,walls,brick wall,stone wall,interior wall', False),  # 0
    ('building,buildings,edifice,edifices', False),  # 1
    ('sky,clouds', False),  # 2
    ('floor,flooring', False),  # 3
    ('tree,trees', False),  # 4
    ('ceiling', False),  # 5
    ('road,route,street,roads,streets,routes', False),  # 6
    ('bed,beds', True),  # 7
    ('windowpane,window,windows', True),  # 8
    ('grass,grass field', False),  # 9
    ('cabinet,cabinets,wall mounted cabine', True),  # 10
    ('sidewalk,pavement', False),  # 11
    ('person,child,girl,boy,woman,man,people,children,girls,boys,women,men', True),  # 12
    ('earth,ground', False),  # 13
    ('door,double door,doors', True),  # 14
    ('table,tables,tablecloth', True),  # 15
    ('mountain,mount,mountains', False),  # 16
    ('plant,flora,plant life,plants,bushes', False),  # 17
    ('curtain,drape,drapery,mantle,pall', True),  # 18
    ('chair,chairs', True),  # 19
    ('car,automobile,cars', True),  # 20
    ('water', False),  # 21
    ('painting,picture,paintings,pictures,wallart,framed canvas', True),  # 22
    ('sofa,couch,sofas,couches', True),  # 23
    ('shelf,shelves', True),  # 24
    ('house exterior', False),  # 25
    ('sea,ocean', False),  # 26
    ('mirror,mirrors', True),  # 27
    ('rug,carpet,carpeting', False),  # 28
    ('field', False),  # 29
    ('armchair,armchairs', True),  # 30
    ('seat,seats', True),  # 31
    ('fence,fencing', True),  # 32
    ('desk,desks', True),  # 33
    ('rock,stone,rocks,stones', False),  # 34
    ('wardrobe,closet,press,wardrobes,closets', True),  # 35
    ('lamp,lamps', True),  # 36
    ('bathtub,bathing tub,bath,tub', True),  # 37
    ('railing,rail', True),  # 38
    ('cushion,cushions', True),  # 39
    ('pedestal', False),  # 40
    ('box,boxes', True),  # 41
    ('column,pillar', True),  # 42
    ('signboard,sign,signboards,signs', True),  # 43
    ('chest of drawers,chest,bureau,dresser', True),  # 44
    ('counter', True),  # 45
    ('sand', False),  # 46
    ('sink', True),  # 47
    ('skyscraper,skyscrapers', False),  # 48
    ('fireplace,hearth,open fireplace', True),  # 49
    ('refrigerator,icebox', True),  # 50
    ('grandstand,covered stand', False),  # 51
    ('path', False),  # 52
    ('stairs,steps', True),  # 53
    ('runway', False),  # 54
    ('case,display case,showcase,vitrine', True),  # 55
    ('pool table,billiard table,snooker table', True),  # 56
    ('pillow,pillows', True),  # 57
    ('screen door,shower door', True),  # 58
    ('stairway,staircase', False),  # 59
    ('river', False),  # 60
    ('bridge,span', False),  # 61
    ('bookcase', True),  # 62
    ('window screen,door screen', False),  # 63
    ('coffee table,cocktail table', True),  # 64
    ('toilet,commode,crapper,potty', True),  # 65
    ('flower,flowers', True),  # 66
    ('book,books', True),  # 67
    ('hill', False),  # 68
    ('bench,benches', True),  # 69
    ('countertop,counter top,worktop', True),  # 70
    ('stove,kitchen stove,kitchen range,kitchen range,cooking stove', True),  # 71
    ('palm tree,palm trees', True),  # 72
    ('kitchen island', True),  # 73
    ('computer,computing machine,computing device,data processor,electronic computer,information processing system', True),  # 74
    ('swivel chair', True),  # 75
    ('boat', True),  # 76
    ('bar', False),  # 77
    ('arcade machine,arcade machines', True),  # 78
    ('hovel,hut,hutch,shack,shanty', False),  # 79
    ('bus,autobus,double-decker,jitney,motorbus,motorcoach,omnibus,passenger vehicle', True),  # 80
    ('towel', True),  # 81
    ('light bulb,lightbulb,bulb,incandescent lamp,electric light,electric-light bulb', True),  # 82
    ('truck,motortruck', True),  # 83
    ('tower,towers', False),  # 84
    ('chandelier,pendant,pendent', True),  # 85
    ('awning,sunshade,sunblind', True),  # 86
    ('streetlight,street lamp', True),  # 87
    ('booth,cubicle,stall,kiosk', True),  # 88
    ('television receiver,television,television set,tv,tv set', True),  # 89
    ('airplane,aeroplane,airplanes,aeroplanes', True),  # 90
    ('dirt track', False),  # 91
    ('apparel,wearing apparel,dress,clothes', True),  # 92
    ('pole', True),  # 93
    ('land,soil', False),  # 94
    ('bannister,banister,balustrade,balusters,handrail', True),  # 95
    ('escalator,moving staircase,moving stairway', False),  # 96
    ('ottoman,pouf,pouffe,puff,hassock', True),  # 97
    ('bottle,bottles,water bottle', True),  # 98
    ('buffet,sideboard', False),  # 99
    ('poster,posting,placard,notice,bill,card', False),  # 100
    ('stage', False),  # 101
    ('van', True),  # 102
    ('ship', True),  # 103
    ('fountain', True),  # 104
    ('conveyer belt,conveyor belt,conveyer,conveyor,transporter', False),  # 105
    ('canopy', False),  # 106
    ('washer,automatic washer,washing machine', True),  # 107
    ('plaything,toy,toys', True),  # 108
    ('swimming pool,swimming bath', False),  # 109
    ('stool,stools', True),  # 110
    ('barrel,cask,barrels,casks', True),  # 111
    ('basket,handbasket', True),  # 112
    ('waterfall,falls', False),  # 113
    ('tent,collapsible shelter', False),  # 114
    ('bag,bags,gift bag,paper bag', True),  # 115
    ('minibike,motorbike', True),  # 116
    ('cradle', False),  # 117
    ('oven', True),  # 118
    ('ball,balls', True),  # 119
    ('food,solid food', True),  # 120
    ('step,stair', True),  # 121
    ('tank,storage tank', False),  # 122
    ('trade name,brand name,brand,marque', True),  # 123
    ('microwave,microwave oven', True),  # 124
    ('plant pots,plant pot,flower pot,flowerpot,planter', True),  # 125
    ('animal,animate being,dog,cat,horse,cow,sheep,zebra,girraffe,bird', True),  # 126
    ('bicycle,bike', True),  # 127
    ('lake', False),  # 128
    ('dishwasher,dish washer,dishwashing machine', True),  # 129
    ('projection screen', True),  # 130
    ('blanket,cover', False),  # 131
    ('sculpture,sculptures', True),  # 132
    ('exhaust hood', True),  # 133
    ('sconce,sconce lamp,sconce light', True),  # 134
    ('vase,vases', True),  # 135
    ('traffic light,traffic signal,traffic lights', True),  # 136
    ('tray,trays', True),  # 137
    ('ashcan,trash can,garbage can,wastebin,ash bin,ash-bin,ashbin,dustbin,trash barrel,trash bin', True),  # 138
    ('ceiling fan,floor fan', True),  # 139
    ('pier,wharf,wharfage,dock', False),  # 140
    ('crt screen', False),  # 141
    ('plate,plates', True),  # 142
    ('monitor,monitoring device,monitors', True),  # 143
    ('bulletin board,notice board', True),  # 144
    ('shower', False),  # 145
    ('radiator', True),  # 146
    ('cup,cups,drinking glass,drinking glasses', True),  # 147
    ('clock', True),  # 148
    ('flag,flags', True),  # 149
)

# the instance annotations' class (R channel - 1) -> the 150-class index
INSTANCE_CLASS: dict[int, int] = {
    0: 7, 1: 8, 2: 10, 3: 12, 4: 14, 5: 15, 6: 18, 7: 19, 8: 20, 9: 22, 10: 23, 11: 24, 12: 27,
    13: 30, 14: 31, 15: 32, 16: 33, 17: 35, 18: 36, 19: 37, 20: 38, 21: 39, 22: 41, 23: 42, 24: 43,
    25: 44, 26: 45, 27: 47, 28: 49, 29: 50, 30: 53, 31: 55, 32: 56, 33: 57, 34: 58, 35: 62, 36: 64,
    37: 65, 38: 66, 39: 67, 40: 69, 41: 70, 42: 71, 43: 72, 44: 73, 45: 74, 46: 75, 47: 76, 48: 78,
    49: 80, 50: 81, 51: 82, 52: 83, 53: 85, 54: 86, 55: 87, 56: 88, 57: 89, 58: 90, 59: 92, 60: 93,
    61: 95, 62: 97, 63: 98, 64: 102, 65: 103, 66: 104, 67: 107, 68: 108, 69: 110, 70: 111, 71: 112,
    72: 115, 73: 116, 74: 118, 75: 119, 76: 120, 77: 121, 78: 123, 79: 124, 80: 125, 81: 126,
    82: 127, 83: 129, 84: 130, 85: 132, 86: 133, 87: 134, 88: 135, 89: 136, 90: 137, 91: 138,
    92: 139, 93: 142, 94: 143, 95: 144, 96: 146, 97: 147, 98: 148, 99: 149,
}


def category_list() -> list[dict]:
    """COCO-panoptic `categories` for ADE20K's 150 classes (ids 0..149)."""
    return [{"id": i, "name": names, "isthing": int(thing)} for i, (names, thing) in enumerate(ADE20K_CLASSES)]


def convert_image(semantic: np.ndarray, instance: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """(semantic H x W uint8, 1-based; instance H x W x 3 RGB) -> (panoptic id map H x W,
    segments_info). Raises ValueError for an instance of no known class."""
    if semantic.shape != instance.shape[:2]:
        raise ValueError(f"semantic annotation {semantic.shape} and instance annotation {instance.shape[:2]} differ in size")
    panoptic = np.zeros(semantic.shape, np.int64)
    segments = []
    classes = semantic.astype(np.int64) - 1  # -1: none
    for category in np.unique(classes):
        if category < 0 or ADE20K_CLASSES[category][1]:
            continue  # no class, or a thing: things come from the instance annotation
        mask = classes == category
        segment_id = 1 + category  # stuff: one segment per class
        panoptic[mask] = segment_id
        segments.append(_segment(segment_id, int(category), mask))
    instance_class, instance_id = instance[..., 0].astype(np.int64) - 1, instance[..., 1].astype(np.int64)
    for number, k in enumerate(np.unique(instance_id[instance_id > 0]), 1):
        mask = instance_id == k
        kinds = np.unique(instance_class[mask])
        if len(kinds) != 1 or int(kinds[0]) not in INSTANCE_CLASS:
            raise ValueError(f"instance {k} has instance classes {(kinds + 1).tolist()}: expected one of 1..100")
        category = INSTANCE_CLASS[int(kinds[0])]
        segment_id = 1000 * (number + 1) + category  # above every stuff id, unique per instance
        panoptic[mask] = segment_id
        segments.append(_segment(segment_id, category, mask))
    return panoptic, segments


def _segment(segment_id: int, category: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": int(segment_id), "category_id": category, "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0}


def convert(root: str | Path, split: str = "validation", out: str | Path | None = None) -> Path:
    """Writes <root>/ade20k_panoptic_{val,train}.json and the PNG folder of that name (or
    under `out`); returns the JSON's path."""
    root = Path(root)
    name = {"validation": "val", "training": "train"}.get(split)
    if name is None:
        raise ValueError(f"split must be validation or training, got {split!r}")
    images_dir, semantic_dir, instance_dir = root / "images" / split, root / "annotations" / split, root / "annotations_instance" / split
    for folder in (images_dir, semantic_dir, instance_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: expected ADEChallengeData2016 with images/, annotations/ and "
                                    "annotations_instance/ (the instance annotations are a separate download)")
    out = Path(out) if out is not None else root
    png_dir = out / f"ade20k_panoptic_{name}"
    png_dir.mkdir(parents=True, exist_ok=True)
    from ovseg_ros.visualize import panoptic_to_rgb

    images, annotations = [], []
    for image_file in sorted(images_dir.glob("*.jpg")):
        stem = image_file.stem
        semantic = cv2.imread(str(semantic_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        instance = cv2.imread(str(instance_dir / f"{stem}.png"), cv2.IMREAD_COLOR)
        if semantic is None or instance is None:
            raise FileNotFoundError(f"{stem}: its annotations/ or annotations_instance/ PNG is missing or unreadable")
        try:
            panoptic, segments = convert_image(semantic, cv2.cvtColor(instance, cv2.COLOR_BGR2RGB))
        except ValueError as exc:
            raise ValueError(f"{stem}: {exc}") from exc
        cv2.imwrite(str(png_dir / f"{stem}.png"), cv2.cvtColor(panoptic_to_rgb(panoptic), cv2.COLOR_RGB2BGR))
        height, width = semantic.shape
        images.append({"id": stem, "file_name": f"{stem}.jpg", "width": int(width), "height": int(height)})
        annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments})
    if not images:
        raise FileNotFoundError(f"no .jpg images in {images_dir}")
    path = out / f"ade20k_panoptic_{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": category_list()}))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ADEChallengeData2016 -> COCO panoptic format (ADE20K panoptic, 150 classes).")
    parser.add_argument("root", help="the ADEChallengeData2016 folder (images/, annotations/, annotations_instance/)")
    parser.add_argument("--split", default="validation", choices=("validation", "training"))
    parser.add_argument("--out", help="where to write (default: root)")
    args = parser.parse_args(argv)
    try:
        path = convert(args.root, args.split, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {path.with_suffix('')}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
