"""GeoPackage reader/writer and the numpy UTM projection (irlvla_gym.scenes.gpkg)."""

from __future__ import annotations

import sqlite3
import struct

import numpy as np
import pytest
import shapely
import shapely.affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from irlvla_gym.scenes.gpkg import (
    Feature, GeoPackage, GeoPackageError, Layer, encode_gpkg_geometry, parse_gpkg_geometry, parse_gpkg_header,
    project_geometries, utm_forward, utm_inverse, utm_zone_from_epsg, write_geopackage,
)

# ---------------------------------------------------------------------------------------------------------------------
# UTM
# ---------------------------------------------------------------------------------------------------------------------


def test_utm_known_point_las_vegas():
    # data-formats.md 1.4: (664753.7, 3999465.6) in zone 11 is 36.126 N, -115.169 (rounded to 3 decimals).
    lon, lat = utm_inverse(664753.7, 3999465.6, 11)
    assert round(float(lon), 3) == -115.169 and round(float(lat), 3) == 36.126
    e, n = utm_forward(float(lon), float(lat), 11)
    assert abs(e - 664753.7) < 1e-3 and abs(n - 3999465.6) < 1e-3
    # The rounded lon/lat is within the rounding error (0.0005 deg ~ 55 m) of the point.
    e, n = utm_forward(-115.169, 36.126, 11)
    assert abs(e - 664753.7) < 60 and abs(n - 3999465.6) < 60


def test_utm_reference_values():
    # On the central meridian: E = 500 km and N = k0 * meridian arc (WGS84 arc to 45 deg = 4 984 944.378 m).
    e, n = utm_forward(-69.0, 45.0, 19)
    assert abs(e - 500000.0) < 1e-6
    assert abs(n - 0.9996 * 4984944.378) < 1e-3
    e, n = utm_forward(105.0, 0.0, 48)
    assert abs(e - 500000.0) < 1e-6 and abs(n) < 1e-6
    # Southern hemisphere false northing.
    _, ns = utm_forward(105.0, -1.0, 48, south=True)
    _, nn = utm_forward(105.0, 1.0, 48)
    assert abs((10_000_000.0 - ns) - nn) < 1e-6
    # Point scale factor on the central meridian is k0: 1e-4 deg of latitude there vs the ellipsoid's arc.
    assert utm_zone_from_epsg(32611) == (11, False) and utm_zone_from_epsg(32748) == (48, True)


def test_utm_round_trip_vectorised():
    rng = np.random.default_rng(0)
    lon = -115.17 + rng.uniform(-0.5, 0.5, 1000)
    lat = 36.12 + rng.uniform(-0.5, 0.5, 1000)
    e, n = utm_forward(lon, lat, 11)
    lo, la = utm_inverse(e, n, 11)
    assert np.max(np.abs(lo - lon)) < 1e-10 and np.max(np.abs(la - lat)) < 1e-10
    # Local metric consistency: 1e-5 deg of latitude ~ 1.109 m near 36 N (times k ~ 0.9998).
    e2, n2 = utm_forward(lon, lat + 1e-5, 11)
    d = np.hypot(e2 - e, n2 - n)
    assert np.all((d > 1.10) & (d < 1.12))


# ---------------------------------------------------------------------------------------------------------------------
# Geometry BLOB header
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("little", [True, False])
def test_header_envelope_codes(code, little):
    geom = LineString([(1.0, 2.0, 3.0), (4.0, 6.0, 5.0)]) if code in (2, 4) else Polygon([(0, 0), (2, 0), (2, 1)])
    blob = encode_gpkg_geometry(geom, 32611, envelope_code=code, little_endian=little)
    hlen, srs, empty, env = parse_gpkg_header(blob)
    assert hlen == 8 + 8 * {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}[code]
    assert srs == 32611 and not empty
    if code:
        minx, miny, maxx, maxy = geom.bounds
        assert env[:4] == (minx, maxx, miny, maxy)  # x-min, x-max, y-min, y-max order
    if code in (2, 4):
        assert env[4:6] == (3.0, 5.0)
    flags = blob[3]
    assert (flags & 1) == int(little) and ((flags >> 1) & 7) == code
    out = parse_gpkg_geometry(blob)
    assert out.equals(geom) and out.has_z == geom.has_z


def test_header_big_endian_srs_and_gdal_flags():
    blob = encode_gpkg_geometry(Point(1, 2), 4326, little_endian=False)
    assert blob[3] == 0x02 and struct.unpack(">i", blob[4:8])[0] == 4326
    assert encode_gpkg_geometry(Point(1, 2), 4326)[3] == 0x03  # GDAL's XY flags


def test_header_empty_geometry():
    blob = encode_gpkg_geometry(Polygon(), 32611)
    assert blob[3] & 0x10 and (blob[3] >> 1) & 7 == 0
    assert parse_gpkg_geometry(blob).is_empty
    # Header-only empty blob (no WKB) also decodes to an empty geometry.
    header_only = b"GP" + bytes([0, 0x11]) + struct.pack("<i", 0)
    assert parse_gpkg_geometry(header_only).is_empty
    assert parse_gpkg_geometry(None) is None


@pytest.mark.parametrize("blob, msg", [
    (b"XX\x00\x03" + b"\x00" * 40, "magic"),
    (b"GP\x00\x23" + b"\x00" * 40, "extended"),
    (b"GP\x00" + bytes([0x01 | (5 << 1)]) + b"\x00" * 80, "envelope"),
    (b"GP\x00\x03\x00\x00", "shorter"),
    (b"GP\x00\x03" + b"\x00" * 12, "truncated"),
    (b"GP\x01\x03" + b"\x00" * 40, "version"),
])
def test_header_rejects(blob, msg):
    with pytest.raises(GeoPackageError, match=msg):
        parse_gpkg_geometry(blob, "t.gpkg fid 1")


# ---------------------------------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------------------------------


E0, N0 = 664000.0, 3999000.0


def _layers():
    poly = shapely.affinity.translate(Polygon([(0, 0), (10, 0), (10, 5), (0, 5)], [[(1, 1), (2, 1), (2, 2)]]), E0, N0)
    multi = MultiPolygon([Polygon([(20, 0), (21, 0), (21, 1)]), Polygon([(30, 0), (31, 0), (31, 1)])])
    return {
        "lanes_polygons": Layer([
            Feature(1, poly, {"lane_group_fid": 7, "lane_index": 0, "speed_limit_mps": 13.4, "name": "a"}),
            Feature(2, shapely.affinity.translate(multi, E0, N0),
                    {"lane_group_fid": None, "lane_index": 1, "speed_limit_mps": float("nan"), "name": None}),
        ]),
        "baseline_paths": [(5, LineString([(E0, N0 + 2.5), (E0 + 10, N0 + 2.5)]),
                            {"lane_fid": 1, "lane_connector_fid": None})],
    }


def test_write_read_round_trip(tmp_path):
    path = write_geopackage(tmp_path / "m.gpkg", _layers(), srs_id=32611,
                            meta={"projectedCoordSystem": "epsg:32611", "version": "x"})
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert con.execute("SELECT data_type FROM gpkg_contents WHERE table_name='meta'").fetchone()[0] == "attributes"
    info = {r[1]: (r[2], r[5]) for r in con.execute("PRAGMA table_info(lanes_polygons)")}
    assert info["fid"] == ("INTEGER", 1) and info["geom"][0] == "BLOB" and info["lane_index"][0] == "INTEGER"
    blob = con.execute("SELECT geom FROM lanes_polygons WHERE fid=1").fetchone()[0]
    assert blob[:4] == b"GP\x00\x03"
    con.close()
    with GeoPackage(path) as gp:
        assert gp.meta["projectedCoordSystem"] == "epsg:32611" and gp.projected_epsg == 32611
        assert gp.feature_tables == ["baseline_paths", "lanes_polygons"]
        assert gp.geometry_column("lanes_polygons") == ("geom", "GEOMETRY", 32611)
        feats = gp.read_features("lanes_polygons")
        assert [f.fid for f in feats] == [1, 2]
        assert feats[0].geometry.equals(_layers()["lanes_polygons"].features[0].geometry)
        assert len(feats[0].geometry.interiors) == 1
        assert feats[0].attributes == {"lane_group_fid": 7, "lane_index": 0, "speed_limit_mps": 13.4, "name": "a"}
        assert feats[1].attributes["lane_group_fid"] is None and feats[1].attributes["speed_limit_mps"] is None
        assert feats[1].geometry.geom_type == "MultiPolygon"
        (b,) = gp.read_features("baseline_paths", ["lane_fid"])
        assert b.fid == 5 and b.attributes == {"lane_fid": 1}
        with pytest.raises(GeoPackageError, match="lanes_polygons.*'nope'"):
            gp.read_features("lanes_polygons", ["nope"])
        with pytest.raises(GeoPackageError, match="'walkways' is missing"):
            gp.read_features("walkways")


def test_epsg4326_layer_is_projected(tmp_path):
    zone = 11
    e0, n0 = 664753.7, 3999465.6
    utm_poly = Polygon([(e0, n0), (e0 + 50, n0), (e0 + 50, n0 + 20), (e0, n0 + 20)])
    ll_poly = project_geometries([utm_poly], zone, inverse=True)[0]
    assert abs(ll_poly.centroid.x + 115.169) < 0.01
    path = write_geopackage(tmp_path / "ll.gpkg", {"lanes_polygons": [(1, ll_poly, {})]}, srs_id=4326,
                            meta={"projectedCoordSystem": "epsg:32611", "geographicCoordSystem": "epsg:4326"})
    with GeoPackage(path) as gp:
        (f,) = gp.read_features("lanes_polygons")
        assert np.allclose(np.asarray(f.geometry.exterior.coords), np.asarray(utm_poly.exterior.coords), atol=1e-4)
        raw = gp.read_features("lanes_polygons", project=False)[0].geometry
        assert raw.equals(ll_poly)
    # No meta at all: the zone follows from the longitude; lon/lat coordinates under an undefined srs are projected.
    path2 = write_geopackage(tmp_path / "ll2.gpkg", {"lanes_polygons": [(1, ll_poly, {})]}, srs_id=0)
    with GeoPackage(path2) as gp:
        (f,) = gp.read_features("lanes_polygons")
        assert gp.projected_epsg == 32611
        assert abs(f.geometry.area - utm_poly.area) < 1e-3
    # Lon/lat-range coordinates labelled with the UTM code are mislabelled lon/lat: projected too (the Reader rule).
    path4 = write_geopackage(tmp_path / "ll4.gpkg", {"lanes_polygons": [(1, ll_poly, {})]}, srs_id=32611,
                             meta={"projectedCoordSystem": "epsg:32611"})
    with GeoPackage(path4) as gp:
        assert abs(gp.read_features("lanes_polygons")[0].geometry.area - utm_poly.area) < 1e-3
    # srs_id -1 (undefined cartesian): a local frame, kept as stored.
    path5 = write_geopackage(tmp_path / "local.gpkg", {"lanes_polygons": [(1, ll_poly, {})]}, srs_id=-1)
    with GeoPackage(path5) as gp:
        assert gp.read_features("lanes_polygons")[0].geometry.equals(ll_poly)
    # EPSG:4326 declared but coordinates out of range: refused.
    path3 = write_geopackage(tmp_path / "bad.gpkg", {"lanes_polygons": [(1, utm_poly, {})]}, srs_id=4326)
    with GeoPackage(path3) as gp, pytest.raises(GeoPackageError, match="EPSG:4326"):
        gp.read_features("lanes_polygons")


def test_reader_rejects_non_gpkg(tmp_path):
    with pytest.raises(GeoPackageError, match="no such GeoPackage"):
        GeoPackage(tmp_path / "missing.gpkg")
    p = tmp_path / "plain.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE x (a)")
    con.commit()
    con.close()
    with pytest.raises(GeoPackageError, match="application_id"):
        GeoPackage(p)
    q = tmp_path / "junk.gpkg"
    q.write_bytes(b"not a database at all" * 100)
    with pytest.raises(GeoPackageError, match="junk.gpkg"):
        GeoPackage(q)


def test_reader_xyz_and_projected_as_is(tmp_path):
    line = LineString([(664000.0, 3999000.0, 610.0), (664100.0, 3999000.0, 611.0)])
    path = write_geopackage(tmp_path / "z.gpkg", {"baseline_paths": [(3, line, {})]}, srs_id=32611)
    con = sqlite3.connect(path)
    blob = con.execute("SELECT geom FROM baseline_paths").fetchone()[0]
    con.close()
    assert struct.unpack("<I", blob[8 + 32 + 1:8 + 32 + 5])[0] == 1002  # ISO LINESTRING Z
    with GeoPackage(path) as gp:
        (f,) = gp.read_features("baseline_paths")
        assert f.geometry.has_z and shapely.equals_exact(f.geometry, line, 0)


def test_reader_names_bad_blob_row(tmp_path):
    path = write_geopackage(tmp_path / "b.gpkg", {"crosswalks": [(1, Point(E0, N0).buffer(2), {}),
                                                                 (2, Point(E0, N0).buffer(1), {})]})
    con = sqlite3.connect(path)
    good = con.execute("SELECT geom FROM crosswalks WHERE fid=2").fetchone()[0]
    con.execute("UPDATE crosswalks SET geom=? WHERE fid=2", (good[:40] + b"\x07\x07\x07",))
    con.execute("UPDATE crosswalks SET geom=NULL WHERE fid=1")
    con.commit()
    con.close()
    with GeoPackage(path) as gp, pytest.raises(GeoPackageError, match="'crosswalks' fid 2.*WKB"):
        gp.read_features("crosswalks")


def test_reader_speed_many_rows(tmp_path):
    import time

    rows = [(i, LineString([(E0 + i, N0), (E0 + i, N0 + 10), (E0 + i + 1, N0 + 20)]), {"lane_fid": i})
            for i in range(1, 20001)]
    path = write_geopackage(tmp_path / "big.gpkg", {"baseline_paths": rows})
    t = time.perf_counter()
    with GeoPackage(path) as gp:
        feats = gp.read_features("baseline_paths")
    assert len(feats) == 20000 and feats[-1].attributes["lane_fid"] == 20000
    assert time.perf_counter() - t < 5.0
