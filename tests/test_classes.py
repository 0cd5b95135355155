"""Tests of seghz.classes: schemes from seghz/schemes/*.json, id/index mapping, palettes and crosswalks."""
from __future__ import annotations

import numpy as np
import pytest
from helpers_core import HZ_DIR, need_shared, read_palette_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seghz.classes import IGNORE, crosswalk_path, get_scheme, index_crosswalk, scheme_names
from seghz.errors import BadInputError, SchemeMismatchError

HZ = ["hz20", "hz14", "hz11", "hz7"]


# ---------------------------------------------------------------- schemes vs the study's palettes


@pytest.mark.realdata
@pytest.mark.parametrize("name,csv_name", [("hz20", "hz20.csv"), ("hz7", "hz7.csv")])
def test_scheme_matches_study_csv(name, csv_name):
    rows = read_palette_csv(need_shared(HZ_DIR / csv_name))
    s = get_scheme(name)
    assert list(s.names) == [r[0] for r in rows]
    assert [tuple(c) for c in s.colors] == [r[1] for r in rows]
    # README of the data: ids are counted from 1 in file order, 0 = unlabelled background
    assert list(s.ids) == list(range(1, len(rows) + 1))
    assert s.unlabelled_ids == (0,)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["hz14", "hz11"])
def test_merged_hz_schemes_use_study_names_and_colours(name):
    """hz14/hz11 are merges of hz20: every (name, colour) is one of the study's palette rows."""
    known = set()
    for csv_name in ("hz20.csv", "hz10.csv", "hz7.csv"):
        p = HZ_DIR / csv_name
        if csv_name != "hz10.csv":
            need_shared(p)
        if p.exists():
            known |= set(read_palette_csv(p))
    s = get_scheme(name)
    pairs = list(zip(s.names, (tuple(c) for c in s.colors)))
    unknown = [p for p in pairs if p not in known]
    assert not unknown, f"{name} classes not in the study palettes: {unknown}"
    assert list(s.ids) == list(range(1, s.num_classes + 1))


def test_hz_scheme_sizes_and_json_basics():
    assert set(HZ) <= set(scheme_names())
    assert [get_scheme(n).num_classes for n in HZ] == [20, 14, 11, 7]
    for n in scheme_names():
        s = get_scheme(n)
        assert len(s.names) == len(s.ids) == len(s.colors)
        assert len(set(s.ids)) == len(s.ids), f"{n}: duplicate ids"
        assert len(set(s.colors)) == len(s.colors), f"{n}: two classes share a colour (decode_rgb would be ambiguous)"
        assert all(0 <= v <= 255 for c in s.colors for v in c)
        assert not set(s.ids) & set(s.unlabelled_ids)
    with pytest.raises(KeyError, match="nonexistent"):
        get_scheme("nonexistent")


def test_hex_colors_and_palette():
    s = get_scheme("hz7")
    assert s.hex_colors()[0] == "#353cac"  # Water 53,60,172
    pal = s.palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[5]) == (254, 195, 55)  # Buildings
    assert tuple(pal[6]) == (248, 250, 13)  # Road_land
    assert tuple(pal[IGNORE]) == (0, 0, 0)


# ---------------------------------------------------------------- ids -> indices


def test_hz20_ids_to_index_and_unlabelled():
    s = get_scheme("hz20")
    ids = np.array([[0, 1, 2], [20, 9, 0]], np.uint8)
    out = s.ids_to_index(ids)
    assert out.dtype == np.uint8
    assert out.tolist() == [[255, 0, 1], [19, 8, 255]]
    # non-uint8 input within range works the same
    assert s.ids_to_index(ids.astype(np.int64)).tolist() == out.tolist()


def test_index_to_ids_inverts_ids_to_index():
    s = get_scheme("hz20")
    ids = np.arange(0, 21, dtype=np.uint8).reshape(3, 7)
    assert np.array_equal(s.index_to_ids(s.ids_to_index(ids)), ids)


def test_unknown_id_raises_naming_source_and_count():
    s = get_scheme("hz20")
    ids = np.ones((4, 5), np.uint8)
    ids[1, 3] = 21
    ids[2, 0] = 21
    ids[3, 4] = 200
    with pytest.raises(BadInputError) as ei:
        s.ids_to_index(ids, source="/data/labels/tile_7.png")
    msg = str(ei.value)
    assert ei.value.source == "/data/labels/tile_7.png"
    assert "/data/labels/tile_7.png" in msg
    assert "3 pixel(s)" in msg
    assert "21" in msg and "200" in msg
    assert "row 1, col 3" in msg  # first bad pixel in row-major order


def test_out_of_range_wide_ids_raise():
    s = get_scheme("hz20")
    with pytest.raises(BadInputError, match="0..255"):
        s.ids_to_index(np.array([[1, 300]], np.int32), source="x.tif")
    with pytest.raises(BadInputError, match="0..255"):
        s.ids_to_index(np.array([[1, -1]], np.int32), source="x.tif")


# ---------------------------------------------------------------- crosswalks

# The study's direct hz20 -> hz7 map (file ids -> hz7 class names)
STUDY_HZ20_TO_HZ7 = {
    **{i: "Water" for i in (1, 2, 3)},
    **{i: "OpenArea" for i in (4, 5)},
    **{i: "Green_land" for i in (6, 19)},
    7: "Forest",
    8: "Reflection_Glass_Curtainwall",
    **{i: "Buildings" for i in range(9, 19)},
    20: "Road_land",
}


def test_hz20_to_hz7_composed_chain_matches_study_map():
    assert crosswalk_path("hz20", "hz7") == ["hz20", "hz14", "hz11", "hz7"]
    src, dst = get_scheme("hz20"), get_scheme("hz7")
    lut = index_crosswalk("hz20", "hz7")
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert len(STUDY_HZ20_TO_HZ7) == 20
    for idx, fid in enumerate(src.ids):
        expected = dst.names.index(STUDY_HZ20_TO_HZ7[fid])
        assert lut[idx] == expected, f"hz20 id {fid} ({src.names[idx]}) -> {dst.names[lut[idx]] if lut[idx] < 7 else lut[idx]}"
    assert lut[IGNORE] == IGNORE
    assert (lut[20:] == IGNORE).all()


def test_crosswalk_applied_to_a_label_mask():
    src = get_scheme("hz20")
    ids = np.array([[0, 1, 10], [19, 20, 5]], np.uint8)
    hz7 = index_crosswalk("hz20", "hz7")[src.ids_to_index(ids)]
    names = get_scheme("hz7").names
    got = [[names[v] if v != 255 else None for v in row] for row in hz7.tolist()]
    assert got == [[None, "Water", "Buildings"], ["Green_land", "Road_land", "OpenArea"]]


def test_identity_crosswalk():
    lut = index_crosswalk("hz7", "hz7")
    assert lut[:7].tolist() == list(range(7))
    assert lut[IGNORE] == IGNORE


def test_gid15_to_hz7_maps_every_class():
    gid = get_scheme("gid15")
    hz7 = get_scheme("hz7")
    lut = index_crosswalk("gid15", "hz7")
    assert gid.num_classes == 15
    assert all(lut[i] < hz7.num_classes for i in range(gid.num_classes)), lut[:15]
    assert lut[IGNORE] == IGNORE
    # a few unambiguous semantic checks
    by_name = {n: hz7.names[lut[i]] for i, n in enumerate(gid.names)}
    assert by_name["river"] == by_name["lake"] == by_name["pond"] == "Water"
    assert by_name["traffic"] == "Road_land"
    assert by_name["arbor_woodland"] == "Forest"
    assert by_name["industrial"] == by_name["urban_residential"] == "Buildings"
    # unlabelled GID id 15 -> ignore, then stays ignore through the crosswalk
    idx = gid.ids_to_index(np.array([[15, 12]], np.uint8))
    assert lut[idx].tolist() == [[255, 0]]


@pytest.mark.parametrize("src,dst", [("hz7", "gid15"), ("hz7", "hz20"), ("gid15", "loveda")])
def test_missing_crosswalk_raises(src, dst):
    assert crosswalk_path(src, dst) is None
    with pytest.raises(SchemeMismatchError, match=f"'{src}' to '{dst}'"):
        index_crosswalk(src, dst)


# ---------------------------------------------------------------- RGB palette masks


@st.composite
def _scheme_and_mask(draw):
    name = draw(st.sampled_from(sorted(scheme_names())))
    s = get_scheme(name)
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    values = list(range(s.num_classes)) + [IGNORE]
    flat = draw(st.lists(st.sampled_from(values), min_size=h * w, max_size=h * w))
    return s, np.array(flat, np.uint8).reshape(h, w)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scheme_and_mask())
def test_colorize_then_decode_is_identity(sm):
    s, mask = sm
    rgb = s.colorize(mask)
    assert rgb.shape == mask.shape + (3,) and rgb.dtype == np.uint8
    assert np.array_equal(s.decode_rgb(rgb), mask)


def test_decode_rgb_accepts_alpha_channel():
    s = get_scheme("hz7")
    mask = np.array([[0, 1], [6, 255]], np.uint8)
    rgba = np.concatenate([s.colorize(mask), np.full((2, 2, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(s.decode_rgb(rgba), mask)


def test_decode_rgb_unknown_colour_reports_count_and_first_position():
    s = get_scheme("hz7")
    rgb = s.colorize(np.zeros((5, 6), np.uint8))
    rgb[2, 4] = (1, 2, 3)
    rgb[2, 5] = (1, 2, 3)
    rgb[4, 0] = (200, 201, 202)
    with pytest.raises(BadInputError) as ei:
        s.decode_rgb(rgb, source="mask.png")
    msg = str(ei.value)
    assert ei.value.source == "mask.png"
    assert "3 pixel(s)" in msg
    assert "row 2, col 4" in msg
    assert "(1, 2, 3)" in msg


def test_decode_rgb_rejects_single_band():
    with pytest.raises(BadInputError, match="3 channels"):
        get_scheme("hz7").decode_rgb(np.zeros((4, 4), np.uint8), source="gray.png")


def test_decode_rgb_rejects_out_of_range_16bit_values():
    rgb = np.array([[[0, 53 * 256 + 60, 172]]], np.uint16)
    with pytest.raises(BadInputError):
        get_scheme("hz7").decode_rgb(rgb, source="mask16.tif")


def test_srgb_to_lab_known_values():
    from seghz.classes import srgb_to_lab

    assert np.allclose(srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=0.01)
    assert np.allclose(srgb_to_lab([0, 0, 0]), [0, 0, 0], atol=0.01)
    assert np.allclose(srgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65


def test_display_palette_keeps_classes_apart_and_never_touches_the_files():
    import itertools

    from seghz.classes import PALETTES, get_scheme, scheme_names, srgb_to_lab

    hz7 = get_scheme("hz7")
    assert hz7.for_display("study") is hz7
    d = hz7.for_display("distinct")
    # the three blues of the study become tan, light green and dark green; the rest keep the study's colours
    assert dict(zip(d.names, d.colors))["Forest"] == (25, 105, 45) and d.colors[0] == hz7.colors[0]
    assert (d.names, d.ids, d.name) == (hz7.names, hz7.ids, hz7.name)
    for name in scheme_names():
        s = get_scheme(name)
        lab = srgb_to_lab(np.array(s.for_display("distinct").colors))
        gap = min(np.linalg.norm(lab[i] - lab[j]) for i, j in itertools.combinations(range(len(lab)), 2))
        assert gap >= 38, (name, gap)  # the study's hz7 Green_land / Forest differ by ΔE 13
    # label files still decode with the study's colours only
    assert hz7.decode_rgb(np.array([[hz7.colors[3]]], np.uint8))[0, 0] == 3
    with pytest.raises(BadInputError):
        hz7.decode_rgb(np.array([[d.colors[3]]], np.uint8))
    with pytest.raises(ValueError, match="unknown palette 'neon'"):
        hz7.for_display("neon")
    assert PALETTES == ("study", "distinct")


def test_a_scheme_rebuilt_from_checkpoint_metadata_gets_the_registry_display_colours():
    from seghz.classes import Scheme, distinct_colors, get_scheme

    hz7 = get_scheme("hz7")
    meta = Scheme(hz7.name, hz7.title, hz7.names, hz7.ids, hz7.colors)  # as checkpoint_scheme builds it: no display
    assert meta.for_display("distinct").colors == hz7.display_colors
    other = Scheme("mine", "mine", ("a", "b"), (1, 2), ((10, 120, 200), (12, 125, 205)))
    assert other.for_display("distinct").colors == distinct_colors(other.colors)
    assert other.for_display("distinct").colors[0] == (10, 120, 200) and other.for_display("distinct").colors[1] != (12, 125, 205)
