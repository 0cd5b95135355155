"""The Map page's region and scene in the URL: :func:`seghz.geo.regions.region_to_query` /
:func:`~seghz.geo.regions.region_from_query` (hypothesis properties: round trip to 1e-7, short links, every
malformed, truncated or edited text refused with a RegionError that says why) and the page itself (AppTest:
``?scene=…&region=…`` seeds a fresh session, drawing / clearing / a jump rewrite the URL, unknown scene ids and bad
regions give warnings, never exceptions)."""
from __future__ import annotations

import base64
import math
import zlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seghz.errors import RegionError
from seghz.geo.regions import (
    QUERY_COORD_LIMIT,
    QUERY_MAX_VERTICES,
    QUERY_SCALE,
    is_axis_rectangle,
    region_from_query,
    region_to_query,
)
from tests import test_page_map
from tests.test_page_map import HZ7, SCENE_ID, app, assert_ok, feature, scene_info, texts

# the Map page's AppTest fixtures (a workspace with the 256 px georeferenced scene ``town``, a fake st_folium)
ws, fake_map, tiny_map_checkpoint = test_page_map.ws, test_page_map.fake_map, test_page_map.tiny_map_checkpoint

TOL = 0.5e-7 + 4e-9  # rounding to 1e-7, plus the float error of v * 1e7 for |v| up to 1e7
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# ------------------------------------------------------------------------------------------------ strategies

HZ_LON = st.floats(119.8, 120.6)
HZ_LAT = st.floats(29.9, 30.6)
ANY_LON = st.floats(-180.0, 180.0)
ANY_LAT = st.floats(-85.0, 85.0)
SIDE = st.floats(1e-6, 0.3)


def rectangle(lon0: float, lat0: float, dlon: float, dlat: float) -> dict:
    """A Leaflet.draw rectangle as GeoJSON (south-west, north-west, north-east, south-east, closed)."""
    w, s, e, n = lon0, lat0, lon0 + dlon, lat0 + dlat
    return {"type": "Polygon", "coordinates": [[[w, s], [w, n], [e, n], [e, s], [w, s]]]}


def ring_of(points: list[tuple[float, float]]) -> list[list[float]]:
    return [list(p) for p in points] + [list(points[0])]


def polygons(lon=ANY_LON, lat=ANY_LAT, max_vertices=40):
    pts = st.lists(st.tuples(lon, lat), min_size=3, max_size=max_vertices)
    poly = st.lists(pts.map(ring_of), min_size=1, max_size=3)  # outer ring + holes
    return st.one_of(
        poly.map(lambda p: {"type": "Polygon", "coordinates": p}),
        st.lists(poly, min_size=1, max_size=3).map(lambda ps: {"type": "MultiPolygon", "coordinates": ps}),
    )


def assert_close(a: dict, b: dict) -> None:
    """Same GeoJSON structure, every coordinate within the rounding."""
    assert a["type"] == b["type"]
    pa = [a["coordinates"]] if a["type"] == "Polygon" else a["coordinates"]
    pb = [b["coordinates"]] if b["type"] == "Polygon" else b["coordinates"]
    assert [[len(r) for r in p] for p in pa] == [[len(r) for r in p] for p in pb]
    for p, q in zip(pa, pb):
        for r, s in zip(p, q):
            assert r[0] == r[-1] and s[0] == s[-1]  # rings stay closed
            for u, v in zip(r, s):
                assert abs(u[0] - v[0]) <= TOL and abs(u[1] - v[1]) <= TOL, (u, v)


def leaflet(geometry: dict) -> dict:
    """A geometry as Leaflet's ``toGeoJSON`` returns it: every coordinate rounded to 6 decimals."""
    def r(c):
        return [round(v, 6) for v in c] if isinstance(c[0], float) else [r(x) for x in c]
    return {"type": geometry["type"], "coordinates": r(geometry["coordinates"])}


def packed(payload: bytes) -> str:
    """A region parameter with any payload and a valid checksum (to reach the checks behind the checksum)."""
    data = payload + zlib.crc32(payload).to_bytes(4, "little")
    return "1." + base64.urlsafe_b64encode(data).decode().rstrip("=")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


# ------------------------------------------------------------------------------------------------ round trip


@given(HZ_LON, HZ_LAT, SIDE, SIDE)
def test_hangzhou_rectangles_round_trip_short_and_stay_rectangles(lon, lat, dlon, dlat):
    g = rectangle(lon, lat, dlon, dlat)
    text = region_to_query(g)
    assert len(text) <= 48, text  # ~40 characters near Hangzhou
    back = region_from_query(text)
    assert_close(g, back)
    assert is_axis_rectangle(back)  # corners rounded alike: still the rectangle tool's shape (counted whole)
    assert region_to_query(back) == text  # canonical: the URL does not change on the next write


@given(ANY_LON, ANY_LAT, st.floats(0.0, 360.0), st.floats(0.0, 170.0))
def test_rectangles_anywhere_round_trip_well_under_200_characters(lon, lat, dlon, dlat):
    g = rectangle(lon, lat, dlon, dlat)
    text = region_to_query({"type": "Feature", "properties": {"source": "x"}, "geometry": g})  # a Feature too
    assert len(text) < 100, text
    assert_close(g, region_from_query(text))


@given(st.floats(-1e5, 1e5), st.floats(-1e5, 0), st.floats(0.5, 5e4), st.floats(0.5, 5e4))
def test_pixel_space_rectangles_round_trip(col, row, w, h):
    """Pixel-space scenes store ``[col, -row]`` positions: large numbers, not degrees."""
    g = rectangle(col, row, w, h)
    text = region_to_query(g)
    assert len(text) < 100, text
    assert_close(g, region_from_query(text))


@given(polygons(HZ_LON, HZ_LAT))
def test_hangzhou_polygons_round_trip(g):
    text = region_to_query(g)
    back = region_from_query(text)
    assert_close(g, back)
    assert region_to_query(back) == text
    assert set(text) <= set(B64URL + ".")  # URL-safe: never percent-encoded


@given(polygons(st.floats(-QUERY_COORD_LIMIT, QUERY_COORD_LIMIT), st.floats(-QUERY_COORD_LIMIT, QUERY_COORD_LIMIT)))
def test_any_valid_polygon_round_trips(g):
    assert_close(g, region_from_query(region_to_query(g)))


@given(polygons(ANY_LON, ANY_LAT, max_vertices=12))
def test_leaflet_positions_come_back_bit_identical(g):
    """Leaflet gives 6 decimals; the link keeps 7: a drawn region comes back exactly as it was drawn."""
    g = leaflet(g)
    assert region_from_query(region_to_query(g)) == g


def test_a_leaflet_rectangle_is_short_and_exact():
    g = rectangle(120.1234567, 30.2, 0.05, 0.04)
    text = region_to_query(g)
    assert len(text) <= 48
    back = region_from_query(text)
    assert back["coordinates"][0][0] == [120.1234567, 30.2]
    assert back["coordinates"][0][2] == [round(120.1234567 + 0.05, 7), round(30.2 + 0.04, 7)]


# ------------------------------------------------------------------------------------------------ refused regions


@pytest.mark.parametrize("geometry, words", [
    ({"type": "Point", "coordinates": [120.0, 30.0]}, "Polygon or MultiPolygon, got 'Point'"),
    ("POLYGON((0 0, 1 0, 1 1, 0 0))", "got str"),
    ({"type": "Polygon", "coordinates": []}, "the polygon has no rings"),
    ({"type": "MultiPolygon", "coordinates": []}, "the MultiPolygon has no polygons"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "is not closed"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "at least 4 positions"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [math.nan, 1], [0, 0]]]}, "non-finite"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [math.inf, 0], [1, 1], [0, 0]]]}, "non-finite"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1e12, 0], [1, 1], [0, 0]]]}, "absurd coordinate"),
    ({"type": "Polygon", "coordinates": [[[0, 0], ["1", 0], [1, 1], [0, 0]]]}, "not a number"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [True, 0], [1, 1], [0, 0]]]}, "not a number"),
    ({"type": "Polygon", "coordinates": [[[0, 0, 5], [1, 0, 5], [1, 1, 5], [0, 0, 5]]]}, "not [x, y]"),
    ({"type": "MultiPolygon", "coordinates": [[]]}, "polygon 1 has no rings"),
])
def test_malformed_regions_are_refused_naming_the_problem(geometry, words):
    with pytest.raises(RegionError, match=None) as err:
        region_to_query(geometry)
    assert words in str(err.value)


def test_too_many_vertices_are_refused_both_ways():
    n = QUERY_MAX_VERTICES + 1
    ring = ring_of([(120 + 0.01 * math.cos(2 * math.pi * i / n), 30 + 0.01 * math.sin(2 * math.pi * i / n))
                    for i in range(n)])
    with pytest.raises(RegionError, match=f"more than {QUERY_MAX_VERTICES} vertices"):
        region_to_query({"type": "Polygon", "coordinates": [ring]})
    ok = region_to_query({"type": "Polygon", "coordinates": [ring[:QUERY_MAX_VERTICES] + [ring[0]]]})
    assert len(region_from_query(ok)["coordinates"][0]) == QUERY_MAX_VERTICES + 1
    # a crafted parameter (valid checksum) that claims more: refused before reading them
    with pytest.raises(RegionError, match="number of vertices of a ring is 1,001"):
        region_from_query(packed(varint(0) + varint(1) + varint(n)))


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("AAEEjorL", "is not a SegHZ region"),
    ("2.AAEEjorL", "format '2'"),
    ("1.AAEE jorL", "character ' '"),
    ("1.AAEE%2BjorL", "character '%'"),
    ("1.AAEE+jorL", "character '+'"),
    ("1.A", "length is impossible"),
    ("1.", "truncated"),
    ("1." + "A" * 30_000, "at most 24,000"),
])
def test_malformed_parameters_are_refused_naming_the_problem(text, words):
    with pytest.raises(RegionError) as err:
        region_from_query(text)
    assert words in str(err.value)


def test_crafted_parameters_with_a_valid_checksum_are_still_checked():
    zz = 2 * int(1.5 * QUERY_COORD_LIMIT * QUERY_SCALE)  # x = 1.5e7, beyond the limit
    for payload, words in [
        (varint(2), "geometry kind is 2"),
        (varint(1) + varint(0), "MultiPolygon without polygons"),
        (varint(0) + varint(0), "polygon without rings"),
        (varint(0) + varint(1) + varint(2), "a ring of 2 vertices"),
        (varint(0) + varint(1) + varint(3) + varint(zz), "beyond ±1e+07"),
        (varint(0) + varint(1) + varint(3) + bytes([0x80] * 12), "overlong number"),
        (varint(0) + varint(1) + varint(3) + bytes(6) + b"\x00", "1 unexpected bytes at its end"),
    ]:
        with pytest.raises(RegionError) as err:
            region_from_query(packed(payload))
        assert words in str(err.value), (payload, str(err.value))
    assert region_from_query(packed(varint(0) + varint(1) + varint(3) + bytes(6)))["type"] == "Polygon"


def test_lonlat_regions_must_be_longitudes_and_latitudes():
    """A georeferenced scene's region: PROJ refuses longitudes past ±540° and latitudes past ±90° (an exception,
    not a RegionError), so the link is refused first; pixel-space coordinates stay free."""
    wide = region_to_query(rectangle(1000.0, 30.0, 1.0, 1.0))
    north = region_to_query(rectangle(120.0, 89.5, 1.0, 1.0))
    for text in (wide, north):
        assert region_from_query(text)["type"] == "Polygon"
        with pytest.raises(RegionError, match="absurd for a georeferenced scene"):
            region_from_query(text, lonlat=True)
    assert region_from_query(region_to_query(rectangle(479.0, -85.0, 61.0, 170.0)), lonlat=True)  # a world copy


@given(st.text(max_size=80))
def test_any_text_decodes_or_raises_a_region_error(text):
    try:
        g = region_from_query(text)
    except RegionError as e:
        assert str(e)
    else:
        assert g["type"] in ("Polygon", "MultiPolygon")


@given(st.text(alphabet=B64URL, max_size=80))
def test_any_base64url_body_decodes_or_raises_a_region_error(body):
    try:
        region_from_query("1." + body)
    except RegionError as e:
        assert "region parameter" in str(e)


@given(polygons(HZ_LON, HZ_LAT, max_vertices=12), st.data())
def test_a_cut_link_is_always_refused_as_truncated(g, data):
    text = region_to_query(g)
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(RegionError) as err:
        region_from_query(text[:cut])
    assert any(w in str(err.value) for w in ("truncated", "is empty", "not a SegHZ region")), str(err.value)


@given(polygons(HZ_LON, HZ_LAT, max_vertices=12), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_an_edited_character_is_refused_or_harmless(g, data):
    """The checksum (CRC-32 catches every burst of up to 32 bits): one changed character of the base64 body is
    refused, or (the unused low bits of the last character) decodes to the very same region."""
    text = region_to_query(g)
    i = data.draw(st.integers(2, len(text) - 1))
    ch = data.draw(st.sampled_from(B64URL))
    assume(ch != text[i])
    edited = text[:i] + ch + text[i + 1:]
    try:
        back = region_from_query(edited)
    except RegionError as e:
        assert any(w in str(e) for w in ("damaged", "truncated", "absurd")), str(e)
    else:
        assert back == region_from_query(text)


# ------------------------------------------------------------------------------------------------ the Map page


def add_plain_scene(ws):
    """A second, pixel-space scene ``plain`` (128×160 px) after ``town``."""
    from seghz.data.io import raster_info, write_index_mask, write_rgb
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(160, 3)
    write_rgb(ws.root / "scenes" / "plain.png", rgb[:, :128])
    write_index_mask(ws.root / "labels" / "plain_label.png", lbl[:, :128], HZ7)
    ws.add_scene("Plain picture", ws.root / "scenes" / "plain.png", "hz7",
                 label_path=ws.root / "labels" / "plain_label.png", scene_id="plain")
    return raster_info(ws.scene_path("plain", "image"))


def no_drawing(fig, **kwargs):
    return {"last_active_drawing": None, "all_drawings": None}


def test_a_link_opens_its_scene_and_region(ws, fake_map):
    """?scene=plain&region=… in a fresh session: the second scene is selected, the region restored (its window in
    the caption), the map zoomed to it, and the URL keeps both."""
    from seghz.geo.regions import bbox_to_window
    from seghz.geo.tiles import pixel_window_to_geojson

    info = add_plain_scene(ws)
    text = region_to_query(pixel_window_to_geojson((10, 20, 50, 60), info))
    fake = fake_map(None)
    at = app()
    at.query_params["scene"] = "plain"
    at.query_params["region"] = text
    at.run()
    assert_ok(at)
    assert at.selectbox(key="map_scene").value == "plain"
    assert "Drawn region: rows 10–59, columns 20–79 (60×50 px" in texts(at)
    assert not at.warning, [w.value for w in at.warning]
    assert not at.button(key="map_predict").disabled
    assert at.session_state["map_focus"]["plain"] == bbox_to_window((10, 20, 60, 80), info.height, info.width)
    assert fake.calls[-1]["key"].startswith("map_folium__plain__at_")  # the map opens at the region
    assert at.query_params == {"scene": "plain", "region": text}
    # later runs keep to the session: a changed URL does not move the scene (it is written back)
    at.query_params["scene"] = SCENE_ID
    at.run()
    assert_ok(at)
    assert at.selectbox(key="map_scene").value == "plain" and at.query_params["scene"] == "plain"
    # a region from a link is an outline the map's trash tool cannot remove: "Clear region" forgets it, takes it
    # out of the URL and re-creates the map (a drawn shape must not come back as the component's last drawing)
    at.button(key="map_clear_region").click().run()
    assert_ok(at)
    assert "plain" not in at.session_state["map_regions"] and "region" not in at.query_params
    assert not any(t.startswith("Drawn region:") for t in texts(at).splitlines())
    assert at.button(key="map_predict").disabled and fake.calls[-1]["key"].endswith("__c1")


def test_an_unknown_scene_in_the_link_warns_and_opens_the_first_scene(ws, fake_map):
    fake_map(None)
    at = app()
    at.query_params["scene"] = "no-such-scene"
    at.query_params["region"] = region_to_query(rectangle(120.0, 30.0, 0.01, 0.01))
    at.run()
    assert_ok(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert "`no-such-scene`" in warnings and "not in this workspace" in warnings, warnings
    assert at.selectbox(key="map_scene").value == SCENE_ID
    assert any("Draw a rectangle or polygon" in i.value for i in at.info)
    assert at.query_params == {"scene": SCENE_ID}  # the URL now names what is shown, without the region
    at.run()  # the warning stays on that scene's page across reruns
    assert_ok(at)
    assert "`no-such-scene`" in "\n".join(w.value for w in at.warning)


@pytest.mark.parametrize("bad, words", [
    ("cut", "truncated"),
    ("1.!!", "character '!'"),
    ("off", "lies outside scene 'Test town (synthetic)'"),
    ("far", "absurd for a georeferenced scene"),
])
def test_a_bad_region_in_the_link_warns_and_is_dropped(ws, fake_map, bad, words):
    from seghz.geo.tiles import pixel_window_to_geojson

    info = scene_info(ws)
    good = region_to_query(pixel_window_to_geojson((40, 50, 60, 80), info))
    text = {"cut": good[:-6], "off": region_to_query(rectangle(10.0, 50.0, 0.01, 0.01)),
            "far": region_to_query(rectangle(5000.0, 30.0, 0.01, 0.01))}.get(bad, bad)
    fake_map(None)
    at = app()
    at.query_params["scene"] = SCENE_ID
    at.query_params["region"] = text
    at.run()
    assert_ok(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert "The region in the link was dropped" in warnings and words in warnings, warnings
    assert at.selectbox(key="map_scene").value == SCENE_ID
    assert SCENE_ID not in at.session_state["map_regions"]
    assert any("Draw a rectangle or polygon" in i.value for i in at.info)  # the page still works
    assert at.query_params == {"scene": SCENE_ID}


def test_drawing_and_clearing_rewrite_the_url_and_a_reload_restores_it(ws, fake_map, monkeypatch):
    import streamlit_folium

    from seghz.geo.tiles import pixel_window_to_geojson

    info = scene_info(ws)
    drawn = feature(leaflet(pixel_window_to_geojson((40, 50, 60, 80), info, inset=0.1)))  # as Leaflet returns it
    fake_map(None)
    at = app().run()
    assert_ok(at)
    assert at.query_params == {"scene": SCENE_ID}  # the scene is in the URL from the start
    fake_map(drawn)
    at.run()
    assert_ok(at)
    caption = next(c.value for c in at.caption if c.value.startswith("Drawn region:"))
    assert caption.startswith("Drawn region: rows 40–99, columns 50–129 (80×60 px")
    link = dict(at.query_params)
    assert link["scene"] == SCENE_ID
    assert region_from_query(link["region"]) == drawn["geometry"]  # Leaflet's 6 decimals: exact

    # F5 / a colleague opening the link: a fresh session with that URL shows the same region
    monkeypatch.setattr(streamlit_folium, "st_folium", no_drawing)
    again = app()
    again.query_params.update(link)
    again.run()
    assert_ok(again)
    assert caption in [c.value for c in again.caption]
    assert again.session_state["map_regions"][SCENE_ID]["geometry"] == drawn["geometry"]
    assert again.query_params == link

    # the analyst deletes the shape: the region leaves the URL too
    monkeypatch.setattr(streamlit_folium, "st_folium", lambda fig, **kw: {"last_active_drawing": None,
                                                                           "all_drawings": []})
    at.run()
    assert_ok(at)
    monkeypatch.setattr(streamlit_folium, "st_folium", no_drawing)
    at.run()
    assert_ok(at)
    assert at.query_params == {"scene": SCENE_ID}


def test_open_on_map_jump_writes_the_url_and_wins_over_it(ws, fake_map):
    from seghz.geo.regions import bbox_to_window, window_to_geojson

    info = add_plain_scene(ws)
    fake_map(None)
    at = app()
    at.query_params["scene"] = "plain"  # a stale URL: the jump from another page wins
    at.session_state["map_jump"] = {"scene_id": SCENE_ID, "bbox": (40, 50, 70, 90)}
    at.run()
    assert_ok(at)
    assert at.selectbox(key="map_scene").value == SCENE_ID
    want = bbox_to_window((40, 50, 70, 90), 256, 256)
    assert at.query_params["scene"] == SCENE_ID
    assert_close(window_to_geojson(want, scene_info(ws))["geometry"], region_from_query(at.query_params["region"]))
    assert info.width == 128  # (the other scene was there to be chosen)
    # the jump's link reopens the same window in a fresh session
    again = app()
    again.query_params.update(at.query_params)
    again.run()
    assert_ok(again)
    r, c, h, w = want
    assert any(x.value.startswith(f"Drawn region: rows {r}–{r + h - 1}, columns {c}–{c + w - 1} ({w}×{h} px")
               for x in again.caption), [x.value for x in again.caption]
