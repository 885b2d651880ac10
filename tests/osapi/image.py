"""Glance v2: version discovery, image list (with next links), show, delete; writes (create,
upload, update, members) in image_upload.py, on the same router."""

from __future__ import annotations

from typing import Any

from .core import Request, Response, Router, glance_error, iso, lookup, paginate, with_query
from .state import PROJECT_ID, State

router = Router()

_CORE = ["id", "name", "status", "visibility", "protected", "os_hidden", "checksum",
         "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size", "min_disk",
         "min_ram", "disk_format", "container_format", "created_at", "updated_at", "tags"]


def _versions(req: Request) -> list[dict[str, Any]]:
    out = []
    for vid, status in (("v2.16", "CURRENT"), ("v2.15", "SUPPORTED"), ("v2.9", "SUPPORTED"),
                        ("v2.0", "SUPPORTED")):
        out.append({"id": vid, "status": status,
                    "links": [{"rel": "self", "href": f"{req.base_url}/image/v2/"}]})
    return out


@router.route("GET", r"/?", auth=False)
def versions(req: Request) -> Response:
    return Response(300, {"versions": _versions(req)})


@router.route("GET", r"/(?:v2|versions)/?", auth=False)
def versions_v2(req: Request) -> Response:
    return Response(200, {"versions": _versions(req)})


def image_view(img: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in img.items():
        if k in ("created_at", "updated_at"):
            d[k] = iso(v)
        else:
            d[k] = v
    d["tags"] = list(img.get("tags", []))
    d["file"] = f"/v2/images/{img['id']}/file"
    d["self"] = f"/v2/images/{img['id']}"
    d["schema"] = "/v2/schemas/image"
    return d


def _visible(img: dict[str, Any]) -> bool:
    return img["visibility"] in ("public", "community", "shared") or img["owner"] == PROJECT_ID


@router.route("GET", r"/v2/images")
def list_images(req: Request) -> Response:
    st: State = req.state
    with st.lock:
        imgs = [i for i in st.images.values() if _visible(i)]
        for key in ("name", "status", "visibility", "owner", "disk_format", "container_format",
                    "os_distro"):
            val = req.q(key)
            if val is not None:
                if key == "visibility" and val == "all":
                    continue
                imgs = [i for i in imgs if str(i.get(key)) == val]
        if req.q("visibility") is None:
            imgs = [i for i in imgs if i["visibility"] != "community" or i["owner"] == PROJECT_ID]
        if not req.q("os_hidden") in ("true", "True"):
            imgs = [i for i in imgs if not i.get("os_hidden")]
        for tag in req.query.get("tag", []):
            imgs = [i for i in imgs if tag in i.get("tags", [])]
        sort_key = req.q("sort_key") or "created_at"
        sort_dir = req.q("sort_dir") or "desc"
        if req.q("sort"):
            first = (req.q("sort") or "").split(",")[0]
            sort_key, _, sort_dir = first.partition(":")
            sort_dir = sort_dir or "desc"
        imgs.sort(key=lambda i: (str(i.get(sort_key, "")), i["id"]), reverse=(sort_dir == "desc"))
        page, nxt = paginate(imgs, req, default_limit=25, max_limit=1000,
                             not_found=lambda m: glance_error(400, f"Invalid marker. Image {m} "
                                                                   "could not be found."))
        body: dict[str, Any] = {"images": [image_view(i) for i in page],
                                "first": "/v2/images", "schema": "/v2/schemas/images"}
        if nxt:
            body["next"] = with_query("/v2/images", req, marker=nxt)
        return Response(200, body)


def _image(req: Request) -> dict[str, Any]:
    return lookup(req.state.images, req.match["iid"],  # type: ignore[index]
                  lambda k: glance_error(404, f"No image found with ID {k}"), _visible)


@router.route("GET", r"/v2/images/(?P<iid>[^/]+)")
def show_image(req: Request) -> Response:
    with req.state.lock:
        return Response(200, image_view(_image(req)))


@router.route("DELETE", r"/v2/images/(?P<iid>[^/]+)")
def delete_image(req: Request) -> Response:
    st: State = req.state
    with st.lock:
        img = _image(req)
        if img["owner"] != PROJECT_ID:
            raise glance_error(403, "You are not permitted to delete this image.")
        if img["protected"]:
            raise glance_error(403, f"Image {img['id']} is protected and cannot be deleted.")
        del st.images[img["id"]]
        st.image_data.pop(img["id"], None)
        st.image_members.pop(img["id"], None)
    return Response(204)


@router.route("GET", r"/v2/schemas/images?")
def schema(req: Request) -> Response:
    props = {k: {"type": ["null", "string"]} for k in _CORE}
    return Response(200, {"name": "image", "properties": props,
                          "additionalProperties": {"type": "string"}, "links": []})


@router.route("GET", r"/v2/info/stores")
def stores(req: Request) -> Response:
    return Response(200, {"stores": [{"id": "file", "default": True}]})



from . import image_upload  # noqa: E402  (registers its routes on this router)

ROUTE_MODULES = (image_upload,)
