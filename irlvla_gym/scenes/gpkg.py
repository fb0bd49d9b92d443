"""GeoPackage (nuPlan map ``map.gpkg``) reading and writing with sqlite3 + shapely, and a numpy UTM projection.

No GDAL / geopandas / pyproj: the container is a SQLite file (data-formats.md, section 1.2), each geometry BLOB is a
GeoPackage header followed by ISO WKB (section 1.3), and the only coordinate transform the nuPlan maps need is the
forward transverse-Mercator (UTM) projection of WGS84 lon/lat (section 1.4), implemented here in vectorised numpy.

Main entry points:

* :func:`utm_forward` / :func:`utm_inverse`: WGS84 lon/lat (deg) <-> UTM easting/northing (m).
* :func:`parse_gpkg_geometry` / :func:`encode_gpkg_geometry`: GeoPackage geometry BLOB <-> shapely geometry.
* :class:`GeoPackage`: a read-only reader returning :class:`Feature` rows, projected to UTM by the "Reader rule".
* :func:`write_geopackage`: a minimal but valid GeoPackage writer (used by the NAVSIM exporter and the tests).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import shapely
import shapely.wkb
from shapely.geometry.base import BaseGeometry

GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION = 10200  # GeoPackage 1.2
WGS84_EPSG = 4326

MAP_UTM_EPSG: dict[str, int] = {
    "sg-one-north": 32648,
    "us-ma-boston": 32619,
    "us-nv-las-vegas-strip": 32611,
    "us-pa-pittsburgh-hazelwood": 32617,
}
"""nuPlan map location -> projected CRS (WGS84 / UTM zone N), data-formats.md section 1.4."""

_ENVELOPE_DOUBLES = {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}


class GeoPackageError(ValueError):
    """A GeoPackage file is missing, malformed or lacks a table/column; the message names the file and the item."""


# ---------------------------------------------------------------------------------------------------------------------
# UTM (transverse Mercator, Krueger series to n^6)
# ---------------------------------------------------------------------------------------------------------------------

_A_WGS84 = 6378137.0
_F_WGS84 = 1.0 / 298.257223563
_K0 = 0.9996
_FE = 500000.0


def _utm_constants() -> tuple[float, float, float, np.ndarray]:
    f = _F_WGS84
    n = f / (2.0 - f)
    e = math.sqrt(f * (2.0 - f))
    A = _A_WGS84 / (1.0 + n) * (1.0 + n**2 / 4.0 + n**4 / 64.0 + n**6 / 256.0)
    alpha = np.array([
        n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16 + 41 * n**4 / 180 - 127 * n**5 / 288 + 7891 * n**6 / 37800,
        13 * n**2 / 48 - 3 * n**3 / 5 + 557 * n**4 / 1440 + 281 * n**5 / 630 - 1983433 * n**6 / 1935360,
        61 * n**3 / 240 - 103 * n**4 / 140 + 15061 * n**5 / 26880 + 167603 * n**6 / 181440,
        49561 * n**4 / 161280 - 179 * n**5 / 168 + 6601661 * n**6 / 7257600,
        34729 * n**5 / 80640 - 3418889 * n**6 / 1995840,
        212378941 * n**6 / 319334400,
    ])
    return n, e, A, alpha


_N, _E, _A, _ALPHA = _utm_constants()


def utm_zone_from_epsg(epsg: int) -> tuple[int, bool]:
    """(zone, south) of a WGS84/UTM EPSG code (326ZZ north, 327ZZ south); ValueError otherwise."""
    if 32601 <= epsg <= 32660:
        return epsg - 32600, False
    if 32701 <= epsg <= 32760:
        return epsg - 32700, True
    raise ValueError(f"EPSG:{epsg} is not a WGS84 / UTM zone code (326ZZ or 327ZZ)")


def utm_zone_from_lon(lon_deg: float) -> int:
    """The standard 6-degree UTM zone (1..60) containing a longitude (deg)."""
    return int(np.clip(np.floor((float(lon_deg) + 180.0) / 6.0) + 1, 1, 60))


def utm_forward(lon: np.ndarray | float, lat: np.ndarray | float, zone: int,
                south: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Project WGS84 longitude/latitude (deg, any broadcastable shapes) to UTM easting/northing (m) in ``zone``.

    Exactly the formulas of data-formats.md section 1.4 (Krueger series to n^6; false easting 500 km, false northing
    0 in the north and 10 000 km in the south). Sub-millimetre accurate within a few degrees of the central meridian.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lam0 = math.radians(6.0 * zone - 183.0)
    phi = np.radians(lat)
    dlam = np.radians(lon) - lam0
    sphi = np.sin(phi)
    t = np.sinh(np.arctanh(sphi) - _E * np.arctanh(_E * sphi))
    xi_p = np.arctan2(t, np.cos(dlam))
    eta_p = np.arctanh(np.sin(dlam) / np.sqrt(1.0 + t * t))
    j2 = 2.0 * np.arange(1, 7)
    xi = xi_p + np.sum(_ALPHA * np.sin(j2 * xi_p[..., None]) * np.cosh(j2 * eta_p[..., None]), axis=-1)
    eta = eta_p + np.sum(_ALPHA * np.cos(j2 * xi_p[..., None]) * np.sinh(j2 * eta_p[..., None]), axis=-1)
    easting = _FE + _K0 * _A * eta
    northing = (10_000_000.0 if south else 0.0) + _K0 * _A * xi
    return easting, northing


def utm_inverse(easting: np.ndarray | float, northing: np.ndarray | float, zone: int,
                south: bool = False, iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`utm_forward`: UTM (m) -> WGS84 (lon, lat) in degrees.

    Solved by Newton iteration on the forward formulas (finite-difference Jacobian), so the round trip
    ``utm_forward(*utm_inverse(E, N))`` reproduces (E, N) to well below a millimetre.
    """
    e = np.asarray(easting, dtype=np.float64)
    n = np.asarray(northing, dtype=np.float64) - (10_000_000.0 if south else 0.0)
    e, n = np.broadcast_arrays(e, n)
    lat = np.clip(n / 110_946.0, -85.0, 85.0)  # metres per degree of latitude, roughly
    lon = (6.0 * zone - 183.0) + (e - _FE) / (111_320.0 * np.cos(np.radians(lat)))
    h = 1e-6  # deg
    for _ in range(iterations):
        e0, n0 = utm_forward(lon, lat, zone)
        e1, n1 = utm_forward(lon + h, lat, zone)
        e2, n2 = utm_forward(lon, lat + h, zone)
        j11, j21 = (e1 - e0) / h, (n1 - n0) / h
        j12, j22 = (e2 - e0) / h, (n2 - n0) / h
        re, rn = e - e0, n - n0
        det = j11 * j22 - j12 * j21
        lon = lon + (j22 * re - j12 * rn) / det
        lat = lat + (-j21 * re + j11 * rn) / det
    return lon, lat


def project_geometries(geoms: np.ndarray | Sequence[BaseGeometry], zone: int, south: bool = False,
                       inverse: bool = False) -> np.ndarray:
    """Project shapely geometries lon/lat (deg) -> UTM (m) (or back with ``inverse``); z is left unchanged.

    Vectorised: one call to :func:`shapely.transform` over all vertices of all geometries.
    """
    arr = np.asarray(geoms, dtype=object)

    def _fn(xy: np.ndarray) -> np.ndarray:
        out = np.array(xy, dtype=np.float64, copy=True)
        if inverse:
            out[:, 0], out[:, 1] = utm_inverse(xy[:, 0], xy[:, 1], zone, south)
        else:
            out[:, 0], out[:, 1] = utm_forward(xy[:, 0], xy[:, 1], zone, south)
        return out

    return shapely.transform(arr, _fn, include_z=None)


# ---------------------------------------------------------------------------------------------------------------------
# Geometry BLOBs
# ---------------------------------------------------------------------------------------------------------------------


def parse_gpkg_header(blob: bytes, where: str = "<blob>") -> tuple[int, int, bool, tuple[float, ...]]:
    """Parse a GeoPackage geometry header (data-formats.md 1.3).

    Returns:
        (header_length_bytes, srs_id, is_empty, envelope) where envelope is the tuple of doubles (0, 4, 6 or 8 values
        in the order minx, maxx, miny, maxy[, minz, maxz][, minm, maxm]).

    Raises:
        GeoPackageError: not a GP blob, unknown version, extended type, invalid envelope code or truncated.
    """
    if blob is None or len(blob) < 8:
        raise GeoPackageError(f"{where}: geometry blob shorter than the 8-byte GeoPackage header")
    if bytes(blob[:2]) != b"GP":
        raise GeoPackageError(f"{where}: geometry blob does not start with the 'GP' magic")
    if blob[2] != 0:
        raise GeoPackageError(f"{where}: unsupported GeoPackage geometry version byte {blob[2]}")
    flags = blob[3]
    if flags & 0x20:
        raise GeoPackageError(f"{where}: extended GeoPackage geometry types (flag bit 5) are not supported")
    if flags & 0xC0:
        raise GeoPackageError(f"{where}: reserved flag bits 6-7 are set (flags 0x{flags:02x})")
    endian = "<" if flags & 0x01 else ">"
    code = (flags >> 1) & 0x07
    if code not in _ENVELOPE_DOUBLES:
        raise GeoPackageError(f"{where}: invalid envelope contents indicator code {code} (valid: 0-4)")
    ndoubles = _ENVELOPE_DOUBLES[code]
    header_len = 8 + 8 * ndoubles
    if len(blob) < header_len:
        raise GeoPackageError(f"{where}: geometry blob truncated inside its envelope")
    (srs_id,) = struct.unpack(endian + "i", bytes(blob[4:8]))
    envelope = struct.unpack(f"{endian}{ndoubles}d", bytes(blob[8:header_len])) if ndoubles else ()
    return header_len, srs_id, bool(flags & 0x10), envelope


def parse_gpkg_geometry(blob: bytes | None, where: str = "<blob>") -> BaseGeometry | None:
    """Decode a GeoPackage geometry BLOB to a shapely geometry (None for a NULL blob).

    An empty geometry (flag bit 4) decodes to the WKB that follows if any, else an empty GeometryCollection.
    """
    if blob is None:
        return None
    header_len, _, empty, _ = parse_gpkg_header(blob, where)
    body = bytes(blob[header_len:])
    if not body:
        if empty:
            return shapely.GeometryCollection()
        raise GeoPackageError(f"{where}: geometry blob has a header but no WKB body")
    try:
        return shapely.wkb.loads(body)
    except Exception as exc:  # shapely raises GEOSException / ValueError / TypeError
        raise GeoPackageError(f"{where}: invalid WKB after the GeoPackage header ({exc})") from None


def encode_gpkg_geometry(geom: BaseGeometry | None, srs_id: int, *, envelope_code: int = 1,
                         little_endian: bool = True) -> bytes | None:
    """Encode a shapely geometry as a GeoPackage BLOB: 'GP', version 0, flags, srs_id, envelope, ISO WKB.

    The default (little endian, envelope code 1 = x/y bounds) gives flags 0x03, as GDAL writes for XY geometries.
    Empty geometries get the empty bit and no envelope. ``envelope_code`` 2-4 add z and/or m bounds (0.0 where the
    geometry has no such ordinate); they exist mainly to exercise readers.
    """
    if geom is None:
        return None
    if envelope_code not in _ENVELOPE_DOUBLES:
        raise ValueError(f"envelope_code must be 0-4, got {envelope_code}")
    empty = geom.is_empty
    code = 0 if empty else envelope_code
    flags = (0x01 if little_endian else 0x00) | (code << 1) | (0x10 if empty else 0x00)
    endian = "<" if little_endian else ">"
    header = b"GP" + bytes([0, flags]) + struct.pack(endian + "i", int(srs_id))
    if code:
        minx, miny, maxx, maxy = geom.bounds
        env = [minx, maxx, miny, maxy]
        if code in (2, 4):
            coords = shapely.get_coordinates(geom, include_z=True)
            z = coords[:, 2] if geom.has_z else np.zeros(1)
            env += [float(np.nanmin(z)), float(np.nanmax(z))]
        if code in (3, 4):
            env += [0.0, 0.0]
        header += struct.pack(f"{endian}{len(env)}d", *env)
    wkb = shapely.to_wkb(geom, flavor="iso", byte_order=1 if little_endian else 0,
                         output_dimension=3 if geom.has_z else 2)
    return header + wkb


# ---------------------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------------------


class Feature(NamedTuple):
    """One row of a feature table: ``fid`` (int), ``geometry`` (shapely, UTM m after projection; None if NULL),
    ``attributes`` (column name -> value, the fid and geometry columns excluded)."""

    fid: int
    geometry: BaseGeometry | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SpatialRef:
    """A row of ``gpkg_spatial_ref_sys``."""

    srs_id: int
    organization: str
    code: int
    definition: str

    @property
    def epsg(self) -> int | None:
        return self.code if self.organization.upper() == "EPSG" else None


def _parse_epsg(text: str | None) -> int | None:
    """'epsg:32611' / 'EPSG:32611' / '32611' -> 32611; anything else -> None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(?:epsg\s*:\s*)?(\d+)\s*", str(text), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


class GeoPackage:
    """Read-only access to a GeoPackage file.

    Args:
        path: the ``.gpkg`` file.
        projected_epsg: target CRS for :meth:`read_features` (a WGS84/UTM code). Default: the ``meta`` table's
            ``projectedCoordSystem``; if absent, the zone of the first geographic coordinates read.

    Coordinates returned by :meth:`read_features` follow the "Reader rule" of data-formats.md 1.4: geometries whose
    SRS is EPSG:4326, or whose coordinates all lie within +-180 / +-90, are projected to UTM with :func:`utm_forward`;
    anything else (the projected code itself, another projected SRS, or srs_id -1 "undefined cartesian") is returned
    as stored. (UTM eastings are never within +-180, so lon/lat-range coordinates under a UTM label are taken to be
    mislabelled lon/lat, as several third-party nuPlan map readers assume.)

    Raises:
        GeoPackageError: the file is missing, not SQLite, not a GeoPackage (application_id) or lacks the gpkg tables.
    """

    def __init__(self, path: str | os.PathLike, projected_epsg: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GeoPackageError(f"{self.path}: no such GeoPackage file")
        try:
            self._con = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True)
            app_id = self._con.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise GeoPackageError(f"{self.path}: not a SQLite/GeoPackage file ({exc})") from None
        if app_id != GPKG_APPLICATION_ID:
            self._con.close()
            raise GeoPackageError(f"{self.path}: PRAGMA application_id is 0x{app_id:08X}, expected 0x47504B47 "
                                  "('GPKG'): not a GeoPackage")
        names = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        for required in ("gpkg_spatial_ref_sys", "gpkg_contents", "gpkg_geometry_columns"):
            if required not in names:
                self._con.close()
                raise GeoPackageError(f"{self.path}: required GeoPackage table {required!r} is missing")
        self._tables = names
        self._geom_cols: dict[str, tuple[str, str, int]] = {
            r[0]: (r[1], r[2], int(r[3])) for r in self._con.execute(
                "SELECT table_name, column_name, geometry_type_name, srs_id FROM gpkg_geometry_columns")}
        self._srs: dict[int, SpatialRef] = {
            int(r[0]): SpatialRef(int(r[0]), str(r[1] or ""), int(r[2]) if r[2] is not None else -1, str(r[3] or ""))
            for r in self._con.execute(
                "SELECT srs_id, organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys")}
        self.meta: dict[str, str] = {}
        if "meta" in names:
            cols = self.columns("meta")
            if "key" in cols and "value" in cols:
                self.meta = {str(k): str(v) for k, v in self._con.execute("SELECT key, value FROM meta")}
        self.projected_epsg = projected_epsg or _parse_epsg(self.meta.get("projectedCoordSystem"))

    # ---- context manager / lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "GeoPackage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- schema ---------------------------------------------------------------------------------------------------

    @property
    def feature_tables(self) -> list[str]:
        """Tables registered in ``gpkg_geometry_columns``."""
        return sorted(self._geom_cols)

    def has_table(self, table: str) -> bool:
        return table in self._tables

    def columns(self, table: str) -> dict[str, tuple[str, bool]]:
        """Column name -> (declared type, is primary key)."""
        if table not in self._tables:
            raise GeoPackageError(f"{self.path}: table {table!r} is missing")
        return {r[1]: (str(r[2]).upper(), bool(r[5])) for r in self._con.execute(f'PRAGMA table_info("{table}")')}

    def geometry_column(self, table: str) -> tuple[str, str, int]:
        """(column name, geometry type name, srs_id) of a feature table."""
        if table not in self._geom_cols:
            if table not in self._tables:
                raise GeoPackageError(f"{self.path}: table {table!r} is missing")
            raise GeoPackageError(f"{self.path}: table {table!r} is not registered in gpkg_geometry_columns")
        return self._geom_cols[table]

    def spatial_ref(self, srs_id: int) -> SpatialRef | None:
        return self._srs.get(int(srs_id))

    # ---- reading --------------------------------------------------------------------------------------------------

    def read_attributes(self, table: str, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All rows of any table as dicts (geometry columns returned as raw bytes)."""
        cols = self.columns(table)
        wanted = list(columns) if columns is not None else list(cols)
        for c in wanted:
            if c not in cols:
                raise GeoPackageError(f"{self.path}: table {table!r} has no column {c!r}")
        sel = ", ".join(f'"{c}"' for c in wanted)
        return [dict(zip(wanted, row)) for row in self._con.execute(f'SELECT {sel} FROM "{table}"')]

    def read_features(self, table: str, columns: Sequence[str] | None = None, *,
                      project: bool = True) -> list[Feature]:
        """All rows of a feature table as :class:`Feature` (fid, geometry, attributes), ordered by fid.

        Args:
            table: feature table name (registered in gpkg_geometry_columns).
            columns: attribute columns to return (default all). Missing ones raise GeoPackageError naming them.
            project: apply the CRS "Reader rule" (lon/lat -> UTM); False returns stored coordinates.
        """
        geom_col, _, srs_id = self.geometry_column(table)
        cols = self.columns(table)
        pk = [c for c, (_, is_pk) in cols.items() if is_pk]
        fid_col = "fid" if "fid" in cols else (pk[0] if pk else None)
        if fid_col is None:
            raise GeoPackageError(f"{self.path}: table {table!r} has no INTEGER PRIMARY KEY (fid) column")
        attr_cols = [c for c in cols if c not in (fid_col, geom_col)] if columns is None else list(columns)
        for c in attr_cols:
            if c not in cols:
                raise GeoPackageError(f"{self.path}: table {table!r}: column {c!r} is missing")
        sel = ", ".join(f'"{c}"' for c in [fid_col, geom_col, *attr_cols])
        rows = self._con.execute(f'SELECT {sel} FROM "{table}" ORDER BY "{fid_col}"').fetchall()
        geoms = self._decode(rows, table, geom_col)
        if project and len(rows):
            geoms = self._to_projected(geoms, srs_id, table)
        return [Feature(int(r[0]), geoms[i], dict(zip(attr_cols, r[2:]))) for i, r in enumerate(rows)]

    def _decode(self, rows: list[tuple], table: str, geom_col: str) -> np.ndarray:
        """Decode the geometry BLOBs (column 1 of ``rows``): headers in Python, the WKB bodies in one vectorised
        shapely call; an invalid body is re-parsed alone so the error names its fid."""
        bodies = np.full(len(rows), None, dtype=object)
        empties = []
        for i, r in enumerate(rows):
            if r[1] is None:
                continue
            where = f"{self.path}: table {table!r} fid {r[0]} column {geom_col!r}"
            header_len, _, empty, _ = parse_gpkg_header(r[1], where)
            body = bytes(r[1][header_len:])
            if body:
                bodies[i] = body
            elif empty:
                empties.append(i)
            else:
                raise GeoPackageError(f"{where}: geometry blob has a header but no WKB body")
        try:
            geoms = shapely.from_wkb(bodies)
        except Exception:  # find and name the bad row
            for i, r in enumerate(rows):
                parse_gpkg_geometry(r[1], f"{self.path}: table {table!r} fid {r[0]} column {geom_col!r}")
            raise
        geoms = np.asarray(geoms, dtype=object)
        for i in empties:
            geoms[i] = shapely.GeometryCollection()
        return geoms

    # ---- CRS ------------------------------------------------------------------------------------------------------

    def _to_projected(self, geoms: np.ndarray, srs_id: int, table: str) -> np.ndarray:
        """Apply the Reader rule to one table's geometries (all share the table's srs_id)."""
        srs = self._srs.get(srs_id)
        epsg = srs.epsg if srs is not None else None
        if srs_id == -1:
            return geoms  # "undefined cartesian": a local metric frame, never lon/lat
        present = np.array([g is not None and not g.is_empty for g in geoms], bool)
        if not present.any():
            return geoms
        coords = shapely.get_coordinates(geoms[present])
        lonlat_range = bool(np.all(np.abs(coords[:, 0]) <= 180.0) and np.all(np.abs(coords[:, 1]) <= 90.0))
        if epsg == WGS84_EPSG and not lonlat_range:
            raise GeoPackageError(f"{self.path}: table {table!r} declares EPSG:4326 (srs_id {srs_id}) but its "
                                  "coordinates exceed the lon/lat range +-180/+-90")
        if epsg != WGS84_EPSG and not lonlat_range:
            return geoms  # projected (the meta CRS or another projected system): as stored
        target = self.projected_epsg
        if target is None:
            target = 32600 + utm_zone_from_lon(float(np.mean(coords[:, 0])))
            if float(np.mean(coords[:, 1])) < 0:
                target += 100
            self.projected_epsg = target
        try:
            zone, south = utm_zone_from_epsg(target)
        except ValueError as exc:
            raise GeoPackageError(f"{self.path}: meta projectedCoordSystem: {exc}") from None
        out = geoms.copy()
        out[present] = project_geometries(geoms[present], zone, south)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------------------


def utm_wkt(epsg: int) -> str:
    """A compact OGC WKT definition for a WGS84 / UTM EPSG code."""
    zone, south = utm_zone_from_epsg(epsg)
    return (f'PROJCS["WGS 84 / UTM zone {zone}{"S" if south else "N"}",GEOGCS["WGS 84",DATUM["WGS_1984",'
            'SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
            'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
            f'PARAMETER["central_meridian",{6 * zone - 183}],PARAMETER["scale_factor",0.9996],'
            f'PARAMETER["false_easting",500000],PARAMETER["false_northing",{10000000 if south else 0}],'
            f'UNIT["metre",1],AUTHORITY["EPSG","{epsg}"]]')


_WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
              'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')


def _sql_type(values: Iterable[Any]) -> str:
    kinds = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_, int, np.integer)):
            kinds.add("INTEGER")
        elif isinstance(v, (float, np.floating)):
            kinds.add("REAL")
        else:
            kinds.add("TEXT")
    if not kinds:
        return "TEXT"
    if kinds == {"INTEGER"}:
        return "INTEGER"
    if kinds <= {"INTEGER", "REAL"}:
        return "REAL"
    return "TEXT"


def _sql_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else float(v)
    return v


def _geometry_type_name(geoms: Sequence[BaseGeometry | None]) -> str:
    types = {g.geom_type.upper() for g in geoms if g is not None and not g.is_empty}
    return types.pop() if len(types) == 1 else "GEOMETRY"


@dataclass
class Layer:
    """A feature table to write: rows of (fid, shapely geometry, attributes). ``columns`` fixes the attribute column
    order and types (name -> SQL type); omitted columns are inferred from the rows."""

    features: Sequence[Feature | tuple]
    columns: Mapping[str, str] = field(default_factory=dict)


def write_geopackage(path: str | os.PathLike, layers: Mapping[str, Layer | Sequence[Feature | tuple]], *,
                     srs_id: int = 32611, meta: Mapping[str, str] | None = None, envelope_code: int = 1,
                     little_endian: bool = True) -> Path:
    """Write a GeoPackage holding the given feature tables (and an attribute table ``meta``).

    Args:
        path: output file (overwritten).
        layers: table name -> :class:`Layer` or a list of (fid, geometry, attributes dict) rows.
        srs_id: EPSG code of the stored coordinates (e.g. 32611 UTM 11N, or 4326 for lon/lat), used as the srs_id.
        meta: rows of the ``meta(fid, key, value)`` attribute table (nuPlan: ``projectedCoordSystem``).
        envelope_code / little_endian: GeoPackage geometry header options (defaults give GDAL's flags 0x03).

    The file has ``application_id`` 'GPKG', the mandatory ``gpkg_spatial_ref_sys`` rows (-1, 0, 4326) plus the
    layer CRS, ``gpkg_contents`` with per-table bounds, ``gpkg_geometry_columns`` and one table per layer with
    ``fid INTEGER PRIMARY KEY``, a ``geom`` BLOB column and the attribute columns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.execute(f"PRAGMA application_id = {GPKG_APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
        con.executescript("""
            CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
                organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
                description TEXT);
            CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
                identifier TEXT UNIQUE, description TEXT DEFAULT '',
                last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
                CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
            CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
                geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
                CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
                CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
                CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
        """)
        srs_rows = [
            ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
            ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
            ("WGS 84 geodetic", 4326, "EPSG", 4326, _WGS84_WKT, "longitude/latitude coordinates in decimal degrees"),
        ]
        if srs_id not in (-1, 0, 4326):
            srs_rows.append((f"WGS 84 / UTM {srs_id}", int(srs_id), "EPSG", int(srs_id), utm_wkt(int(srs_id)), ""))
        con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", srs_rows)

        for table, layer in layers.items():
            if not isinstance(layer, Layer):
                layer = Layer(layer)
            rows = [f if isinstance(f, Feature) else Feature(*f) for f in layer.features]
            attr_names: list[str] = list(layer.columns)
            for r in rows:
                for k in r.attributes:
                    if k not in attr_names:
                        attr_names.append(k)
            types = {c: layer.columns.get(c) or _sql_type(r.attributes.get(c) for r in rows) for c in attr_names}
            col_sql = "".join(f', "{c}" {types[c]}' for c in attr_names)
            con.execute(f'CREATE TABLE "{table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, geom BLOB{col_sql})')
            geoms = [r.geometry for r in rows]
            valid = [g for g in geoms if g is not None and not g.is_empty]
            bounds = shapely.total_bounds(valid) if valid else [None] * 4
            has_z = int(any(g.has_z for g in valid))
            con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, min_x, min_y, max_x, max_y, "
                        "srs_id) VALUES (?, 'features', ?, ?, ?, ?, ?, ?)",
                        (table, table, *(None if b is None else float(b) for b in bounds), int(srs_id)))
            con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, ?, 0)",
                        (table, _geometry_type_name(geoms), int(srs_id), has_z))
            placeholders = ", ".join("?" * (2 + len(attr_names)))
            insert_cols = "".join(f', "{c}"' for c in attr_names)
            con.executemany(
                f'INSERT INTO "{table}" (fid, geom{insert_cols}) VALUES ({placeholders})',
                [(int(r.fid), encode_gpkg_geometry(r.geometry, srs_id, envelope_code=envelope_code,
                                                   little_endian=little_endian),
                  *(_sql_value(r.attributes.get(c)) for c in attr_names)) for r in rows])
        if meta is not None:
            con.execute("CREATE TABLE meta (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, key TEXT, value TEXT)")
            con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier) VALUES ('meta', "
                        "'attributes', 'meta')")
            con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(str(k), str(v)) for k, v in meta.items()])
        con.commit()
    finally:
        con.close()
    return path
