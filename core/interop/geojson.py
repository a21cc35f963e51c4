"""QuPath GeoJSON (a FeatureCollection of polygons) through ``shapely`` and ``geojson``.

Export: one Feature per instance, its geometry traced along the outer edges of the mask's
pixels, so its area is the mask's pixel count; holes are interior rings, a mask in several parts
is a MultiPolygon, and a mask whose pixels touch only at a corner is repaired with
``shapely.make_valid`` (every geometry written is valid). ``properties`` carry QuPath's
``objectType`` (``annotation`` or ``detection``), ``classification`` (``name`` and RGB
``color``), the instance ``name`` and a ``score`` measurement. Nothing is lost.

Import: a FeatureCollection, one Feature or a JSON list of Features (QuPath writes both).
Polygon and MultiPolygon geometries (and the polygons of a GeometryCollection) become instances,
classed by ``classification.name``; points and lines are left out and counted.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..structures.instances import Instances
from .common import ImportedImage, class_colour
from .polygons import Part, masks_from_rings, trace_mask

OBJECT_TYPES = ("annotation", "detection")


def mask_geometry(parts: list[Part]):
    """A valid shapely Polygon or MultiPolygon of traced parts (exteriors counter-clockwise)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.geometry.polygon import orient

    polys = [Polygon(p.exterior, p.holes) for p in parts]
    geom = polys[0] if len(polys) == 1 else MultiPolygon(polys)
    if not geom.is_valid:  # rings touching themselves at a pixel corner
        geom = shapely.make_valid(geom)
        if geom.geom_type == "GeometryCollection":
            geom = shapely.union_all([g for g in geom.geoms if g.geom_type.endswith("Polygon")])
    if geom.geom_type == "Polygon":
        return orient(geom)
    return MultiPolygon([orient(g) for g in geom.geoms])


def feature_collection(instances: Instances, class_names: Sequence[str], uids: Sequence[int],
                       image_name: str, object_type: str = "annotation"):
    """The instances of one image as a ``geojson.FeatureCollection`` (QuPath's layout).

    Args:
        instances: one image's instances, with masks.
        class_names: category names by class index.
        uids: an id per instance (feature names and stable feature UUIDs).
        image_name: the image's file name (part of the UUIDs and the collection's name).
        object_type: QuPath object type, ``annotation`` or ``detection``.
    """
    import geojson
    from shapely.geometry import mapping

    if object_type not in OBJECT_TYPES:
        raise DataError(f"objectType must be one of {OBJECT_TYPES}, got {object_type!r}")
    features = []
    for i in range(len(instances)):
        parts = trace_mask(instances.masks, i)
        if not parts:
            continue
        cls = int(instances.classes[i])
        fid = uuid.uuid5(uuid.NAMESPACE_URL, f"cellseg:{image_name}:{int(uids[i])}")
        props = {"objectType": object_type,
                 "classification": {"name": class_names[cls], "color": list(class_colour(cls))},
                 "name": f"{class_names[cls]}-{int(uids[i])}",
                 "measurements": {"score": round(float(instances.scores[i]), 6)}}
        features.append(geojson.Feature(id=str(fid), geometry=mapping(mask_geometry(parts)),
                                        properties=props))
    return geojson.FeatureCollection(features, name=image_name)


def write_geojson(path: str | Path, instances: Instances, class_names: Sequence[str],
                  uids: Sequence[int], image_name: str, object_type: str = "annotation") -> int:
    """Write :func:`feature_collection` to ``path``; returns the number of features."""
    import geojson

    fc = feature_collection(instances, class_names, uids, image_name, object_type)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(geojson.dumps(fc, separators=(",", ":")) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(fc["features"])


def read_geojson(path: str | Path, image_size: tuple[int, int]) -> ImportedImage:
    """Read QuPath (or any) GeoJSON polygons as one image's instances.

    Args:
        path: a ``.geojson``/``.json`` file.
        image_size: (H, W) of the image; geometries are clipped to it.

    Returns:
        The instances with their ``classification`` names and ``score`` measurements.
    """
    import geojson
    from shapely.geometry import shape

    path = Path(path)
    if not path.is_file():
        raise DataError(f"GeoJSON file not found: {path}")
    try:
        data = geojson.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{path}: not JSON ({exc})") from exc
    features = _features(data, path)
    rings, names, scores, skipped = [], [], [], {}
    for k, feat in enumerate(features):
        where = f"{path}: feature #{k}"
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise DataError(f"{where} has no geometry object")
        try:
            geom = shape(feat["geometry"])
        except Exception as exc:  # shapely raises several types on malformed coordinates
            raise DataError(f"{where}: malformed geometry ({exc})") from exc
        polys = _polygons(geom)
        if not polys:
            kind = geom.geom_type.lower()
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        rings.append([(np.asarray(p.exterior.coords, np.float64)[:-1],
                       [np.asarray(h.coords, np.float64)[:-1] for h in p.interiors])
                      for p in polys])
        props = feat.get("properties") or {}
        names.append(_class_name(props))
        scores.append(_score(props))
    masks, covers = masks_from_rings(rings, image_size)
    if not covers.all():
        skipped["covering no pixel"] = int((~covers).sum())
    keep = np.flatnonzero(covers)
    return ImportedImage(masks[keep], [names[k] for k in keep],
                         np.array(scores, np.float32)[keep] if len(scores) else None,
                         skipped=[f"{n} {what} feature{'s' if n > 1 else ''}"
                                  for what, n in skipped.items()])


def _features(data, path: Path) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            if not isinstance(data.get("features"), list):
                raise DataError(f"{path}: FeatureCollection without a 'features' list")
            return data["features"]
        if data.get("type") == "Feature":
            return [data]
        if data.get("type") in ("Polygon", "MultiPolygon"):
            return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise DataError(f"{path}: expected a GeoJSON FeatureCollection, Feature or list of "
                    "Features")


def _polygons(geom) -> list:
    import shapely

    if geom.is_empty:
        return []
    if geom.geom_type in ("Polygon", "MultiPolygon") and not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type == "Polygon":
        return [geom]
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


def _class_name(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, str) and cls:
        return cls
    return None


def _score(props: dict) -> float:
    meas = props.get("measurements")
    if isinstance(meas, dict) and isinstance(meas.get("score"), (int, float)):
        return float(meas["score"])
    if isinstance(meas, list):  # QuPath 0.2: [{"name": ..., "value": ...}]
        for m in meas:
            if isinstance(m, dict) and m.get("name") == "score":
                return float(m.get("value", 1.0))
    return 1.0


