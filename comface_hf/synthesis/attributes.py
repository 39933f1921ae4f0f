"""The 43 ComFace attributes and their directions in the embedded renderer's parameter space.

The paper (Sec. 3.1 / 4.1) edits StyleGAN latents along InterFaceGAN normals for weight, age,
smile and the 40 CelebA attributes.  The embedded renderer mirrors this: every attribute is a
*direction* ``n_m`` in the renderer's continuous face-parameter space and an edit is
``p_edit = p + t * n_m`` with ``t = alpha / 5`` (so ``alpha = +-5`` is one full unit step).

Every direction only touches parameters that the renderer maps *linearly or piecewise-linearly*
to pixels without saturating inside ``|alpha| <= 5``, so the pixel change from the neutral
face grows monotonically with ``|alpha|`` for both signs and for every identity.  Attributes
whose feature an identity may lack (eyeglasses, hat, beard...) carry a secondary component
(e.g. eye-socket depth, hair volume) that keeps changing the image after the feature has faded
out, exactly like the entangled directions InterFaceGAN finds in StyleGAN.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

#: Paper order: weight [50], age and smile [56], then the 40 CelebA attributes [40].
CELEBA_ATTRIBUTES: List[str] = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]

#: All 43 attribute names, in index order (``attributes`` tensors passed to ``render`` index this).
ATTRIBUTE_NAMES: List[str] = ["weight", "age", "smile"] + CELEBA_ATTRIBUTES

#: Renderer version 1.1.0's direction of each attribute: renderer parameter -> change per unit ``t = alpha / 5``.
ATTRIBUTE_DIRECTIONS_V1: Dict[str, Mapping[str, float]] = {
    # weight: wider face, fuller cheeks, double chin, thicker neck, slightly puffier eyes.
    "weight": {"face_w": 0.06, "cheek": 0.6, "dchin": 0.8, "jaw": -0.12, "neck_w": 0.05, "eye_open": -0.06},
    # age: wrinkles/sagging/grey hair (piecewise) plus linear skin darkening and thinner lips.
    "age": {"age": 0.9, "lip_full": -0.006, "eye_w": -0.004, "bags": 0.15},
    # smile: AU12 (lip corners up, wider mouth) and AU6 (cheeks raised, eyes squint).
    "smile": {"smile": 0.09, "cheek_raise": 0.9, "mouth_w": 0.015, "mouth_open": 0.02},
    "5_o_Clock_Shadow": {"stubble": 0.9},
    "Arched_Eyebrows": {"brow_arch": 0.035, "brow_gap": 0.01},
    "Attractive": {"smooth": 0.8, "eye_w": 0.006, "lip_full": 0.004, "makeup": 0.2},
    "Bags_Under_Eyes": {"bags": 0.8},
    "Bald": {"bald": 1.0},
    "Bangs": {"bangs": 1.0},
    "Big_Lips": {"lip_full": 0.012},
    "Big_Nose": {"nose_scale": 0.35},
    "Black_Hair": {"hair_dark": 0.8},
    "Blond_Hair": {"hair_blond": 0.8},
    "Blurry": {"blur": 1.0},
    "Brown_Hair": {"hair_brown": 0.8},
    "Bushy_Eyebrows": {"brow_thick": 0.012, "brow_dark": 0.3},
    "Chubby": {"face_w": 0.045, "cheek": 0.8, "dchin": 0.4},
    "Double_Chin": {"dchin": 1.0},
    "Eyeglasses": {"glasses": 1.0, "socket": -0.5},
    "Goatee": {"goatee": 1.0},
    "Gray_Hair": {"grey": 0.9},
    "Heavy_Makeup": {"makeup": 0.9, "lip_red": 0.3},
    "High_Cheekbones": {"cheekbone": 0.6},
    "Male": {"jaw": -0.1, "brow_thick": 0.006, "stubble": 0.35, "lip_red": -0.25, "hair_len": -0.6},
    "Mouth_Slightly_Open": {"mouth_open": 0.06},
    "Mustache": {"moustache": 1.0},
    "Narrow_Eyes": {"eye_open": -0.3},
    "No_Beard": {"beard": -1.0, "stubble": -0.4},
    "Oval_Face": {"face_h": 0.035, "face_w": -0.02, "jaw": 0.1},
    "Pale_Skin": {"pale": 0.8},
    "Pointy_Nose": {"nose_point": 0.8},
    "Receding_Hairline": {"recede": 0.5},
    "Rosy_Cheeks": {"rosy": 0.6},
    "Sideburns": {"sideburn": 1.0},
    "Smiling": {"smile": 0.08, "cheek_raise": 1.0, "mouth_open": 0.025},
    "Straight_Hair": {"wavy": -0.9},
    "Wavy_Hair": {"wavy": 0.9},
    "Wearing_Earrings": {"earrings": 1.0, "ear_size": -0.015},
    "Wearing_Hat": {"hat": 1.0, "hair_vol": -0.04},
    "Wearing_Lipstick": {"lip_red": 0.7},
    "Wearing_Necklace": {"necklace": 1.0, "collar": -0.08},
    "Wearing_Necktie": {"necktie": 1.0, "shirt_l": -0.3},
    "Young": {"age": -0.9, "smooth": 0.3},
}

assert len(ATTRIBUTE_NAMES) == 43 and set(ATTRIBUTE_DIRECTIONS_V1) == set(ATTRIBUTE_NAMES)


#: Expression attributes beyond the paper's 43 (renderer version 2 only; they follow the 43 in index order, so the
#: paper's indices do not move). Facial Action Coding System (Ekman & Friesen 1978): AU1+2 inner and outer brow
#: raiser (frontalis: brows up, horizontal forehead lines), AU4 brow lowerer (corrugator/procerus: brows down and
#: together, vertical lines between them), AU15 lip corner depressor (depressor anguli oris: corners pulled down,
#: chin boss wrinkled), AU26 jaw drop (mandible lowered, lips parted). Off in the paper preset (``--attributes all``
#: is the 43); name them in ``--attributes`` to train on them.
EXPRESSION_ATTRIBUTES: List[str] = ["brow_raise_AU1_2", "brow_lower_AU4", "lip_corner_depressor_AU15", "jaw_drop_AU26"]

#: Every attribute renderer version 2 can edit: the paper's 43, then :data:`EXPRESSION_ATTRIBUTES`.
ALL_ATTRIBUTE_NAMES: List[str] = ATTRIBUTE_NAMES + EXPRESSION_ATTRIBUTES

#: Renderer version 2's direction of each attribute (parameter -> change per unit ``t = alpha / 5``). The parameters
#: are the version-2 face model's (:data:`comface_hf.synthesis.renderer.PARAM_NAMES`); their anatomy is described
#: in :mod:`comface_hf.synthesis.renderer`. ``age`` is in units of 50 years (so alpha = +-5 is +-25 years) and drives
#: craniofacial growth below 18 years and adult ageing above; ``smile`` and ``cheek_raise`` are AU12 and AU6
#: intensities (1 = a broad smile).
ATTRIBUTE_DIRECTIONS: Dict[str, Mapping[str, float]] = {
    **ATTRIBUTE_DIRECTIONS_V1,
    # weight = facial adiposity: buccal and jowl fat (fuller lower face), softer jaw line, double chin, thicker
    # neck, narrower eye aperture (Coleman & Grover 2006; Windhager et al. 2011 on perceived facial adiposity).
    "weight": {"face_w": 0.05, "cheek": 0.8, "dchin": 0.8, "jaw": -0.12, "neck_w": 0.05, "eye_open": -0.06},
    # age: +-25 years of growth (cardioidal strain, Todd et al. 1980) below 18 and ageing above (renderer).
    "age": {"age": 0.5},
    # smile = AU12 (zygomaticus major: corners up and back, lips parted over the upper teeth, deeper nasolabial
    # folds) + AU6 (orbicularis oculi: cheeks raised, lower lids pushed up, crow's feet).
    "smile": {"smile": 1.0, "cheek_raise": 0.9},
    "Smiling": {"smile": 0.9, "cheek_raise": 0.6, "mouth_open": 0.01},
    "Young": {"age": -0.4, "smooth": 0.3},
    "Narrow_Eyes": {"eye_open": -0.3},
    "Mouth_Slightly_Open": {"jaw_drop": 0.35},
    # Entangled secondary components where the feature may be hidden or out of the frame (long hair over the ears,
    # clothes below the FFHQ crop), as InterFaceGAN's directions are entangled.
    "Sideburns": {"sideburn": 1.0, "stubble": 0.15},
    "Wearing_Earrings": {"earrings": 1.0, "ear_size": -0.015, "makeup": 0.15},
    "Wearing_Necktie": {"necktie": 1.0, "shirt_l": -0.3, "male": 0.15},
    "brow_raise_AU1_2": {"brow_raise": 1.0},
    "brow_lower_AU4": {"brow_lower": 1.0},
    "lip_corner_depressor_AU15": {"lip_depress": 1.0},
    "jaw_drop_AU26": {"jaw_drop": 1.0},
}
assert set(ATTRIBUTE_DIRECTIONS) == set(ALL_ATTRIBUTE_NAMES)

#: Renderer 2.1.0 = renderer 2.0.0 with a broader smile (the only difference). At full intensity AU12 pulls the corners
#: further up and back and parts the lips over the upper teeth, which fill the opening; AU6 narrows the eye aperture
#: (Duchenne smile: cheeks raised against the lower lids; Ekman, Davidson & Friesen 1990). Renderer 2.0.0's smile
#: changed 64% as much of a 64 px picture as weight did; this one is meant to change at least as much.
ATTRIBUTE_DIRECTIONS_V2_1: Dict[str, Mapping[str, float]] = {
    "smile": {"smile": 1.3, "cheek_raise": 1.0, "mouth_open": 0.05, "mouth_w": 0.02, "eye_open": -0.15, "teeth_show": 1.0},
    "Smiling": {"smile": 1.1, "cheek_raise": 0.8, "mouth_open": 0.045, "mouth_w": 0.015, "eye_open": -0.1, "teeth_show": 1.0},
}


def resolve_attribute(name: str, names: List[str] | None = None) -> int:
    """Index of attribute ``name`` in ``names`` (default :data:`ATTRIBUTE_NAMES`).

    Raises:
        KeyError: the name is unknown; the message lists every valid name.
    """
    names = ALL_ATTRIBUTE_NAMES if names is None else names
    try:
        return names.index(name)
    except ValueError:
        raise KeyError(
            f"Unknown attribute {name!r}. Valid attribute names are: {', '.join(names)}"
        ) from None
