"""nginx.conf static-file directives: `root`, `alias`, `index`, `try_files`, `types`, `error_page`.

Reads, per http/server/location level, the directives of nginx 1.22's
ngx_http_core_module (`root`, `alias`, `try_files`, `types { }`, `default_type`,
`error_page`, `etag`) and ngx_http_index_module (`index`) with nginx's merge rules:
`root`, `index`, `default_type`, `etag` inherit outside-in; `types` and `error_page`
are replaced as a whole by an inner level that sets them; `alias` and `try_files`
belong to the level that sets them. Errors name file:line with nginx's messages
(`"alias" directive is duplicate, "root" directive was specified earlier`, `value "N"
must be between 300 and 599`, `invalid value "..."`). Pure: `include` inside `types`
goes through the caller's callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.tree import Node

IncludeFn = Callable[[str, Location, Diagnostics], Sequence[Node]]

#: nginx's `types` when no `types` block is in effect (ngx_http_core_default_types).
BUILTIN_TYPES: Mapping[str, str] = {"html": "text/html", "gif": "image/gif", "jpg": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """`error_page CODE... [=[RESPONSE]] URI`: `response` None keeps the error's status,
    0 (a bare `=`) takes the status of whatever answers `uri`."""

    uri: str
    response: int | None = None


@dataclass(frozen=True, slots=True)
class StaticConf:
    """The static-file settings in effect at one level, after merging.

    `root` is None when no level set one (nginx would use its compiled-in `html`);
    `types` is None for nginx's built-in three-entry map."""

    root: str | None = None
    alias: str | None = None
    index: tuple[str, ...] = ("index.html",)
    try_files: tuple[str, ...] = ()
    types: Mapping[str, str] | None = None
    default_type: str = "text/plain"
    error_pages: Mapping[int, ErrorPage] | None = None
    etag: bool = True
    loc: Location | None = None  # where try_files was set (for messages)

    @property
    def serves_files(self) -> bool:
        """Whether an explicit `root` or `alias` is in effect here."""
        return self.root is not None or self.alias is not None

    def inherit(self) -> StaticConf:
        """What an inner level starts from (alias and try_files are not inherited)."""
        return replace(self, alias=None, try_files=(), loc=None)


_NAMES = frozenset(
    {"root", "alias", "index", "try_files", "types", "default_type", "error_page", "etag"}
    | {"server_name_in_redirect"}
)


def read_static(
    nodes: Sequence[Node],
    inherited: StaticConf,
    diags: Diagnostics,
    include: IncludeFn | None = None,
) -> StaticConf:
    """Merge this level's static-file directives over `inherited` (see module doc)."""
    conf = inherited.inherit()
    pages: dict[int, ErrorPage] | None = None
    seen: set[str] = set()
    for node in nodes:
        name = node.name
        if name not in _NAMES:
            continue
        args = node.arg_texts()
        if name in ("root", "alias"):
            other = "alias" if name == "root" else "root"
            if other in seen:
                diags.error(
                    node.loc,
                    f'"{name}" directive is duplicate, "{other}" directive was specified earlier',
                )
                continue
            if name in seen:
                diags.error(node.loc, f'"{name}" directive is duplicate')
                continue
            seen.add(name)
            if name == "root":
                conf = replace(conf, root=args[0])
            else:
                conf = replace(conf, alias=args[0], root=None)
        elif name == "index":
            if any(not a for a in args):
                diags.error(node.loc, 'index "" in "index" directive is invalid')
                continue
            # several `index` lines at one level add up
            conf = replace(conf, index=(*conf.index, *args) if name in seen else tuple(args))
            seen.add(name)
        elif name == "try_files":
            if name in seen:
                diags.error(node.loc, '"try_files" directive is duplicate')
                continue
            seen.add(name)
            last = args[-1]
            if last.startswith("=") and not (last[1:].isdigit() and 0 < int(last[1:]) < 1000):
                diags.error(node.loc, f'invalid code "{last}"')
                continue
            conf = replace(conf, try_files=tuple(args), loc=node.loc)
        elif name == "types":
            types = read_types(node, diags, include)
            if types is not None:
                conf = replace(conf, types=types)
        elif name == "default_type":
            conf = replace(conf, default_type=args[0])
        elif name == "etag":
            if args[0] not in ("on", "off"):
                diags.error(node.loc, f'invalid value "{args[0]}" in "etag" directive')
                continue
            conf = replace(conf, etag=args[0] == "on")
        elif name == "server_name_in_redirect":
            if args[0] == "on":  # redirects would name server_name instead of Host
                diags.error(node.loc, '"server_name_in_redirect on" is not supported')
            elif args[0] != "off":
                diags.error(node.loc, f'invalid value "{args[0]}" in "{name}" directive')
        elif name == "error_page":
            if pages is None:
                pages = {}  # this level replaces the inherited list
            _error_page(node, args, pages, diags)
    if pages is not None:
        conf = replace(conf, error_pages=pages)
    return conf


def _error_page(
    node: Node, args: tuple[str, ...], pages: dict[int, ErrorPage], diags: Diagnostics
) -> None:
    uri = args[-1]
    codes = list(args[:-1])
    response: int | None = None
    if codes and codes[-1].startswith("="):
        text = codes.pop()[1:]
        if text and not text.isdigit():
            diags.error(node.loc, f'invalid value "={text}"')
            return
        response = int(text) if text else 0
    if not codes:
        diags.error(node.loc, 'invalid number of arguments in "error_page" directive')
        return
    for code in codes:
        if not code.isdigit():
            diags.error(node.loc, f'invalid value "{code}"')
            return
        value = int(code)
        if not 300 <= value <= 599:
            diags.error(node.loc, f'value "{code}" must be between 300 and 599')
            return
        if value == 499:
            diags.error(node.loc, 'value "499" is invalid')
            return
        pages.setdefault(value, ErrorPage(uri, response))


def read_types(
    block: Node, diags: Diagnostics, include: IncludeFn | None = None
) -> dict[str, str] | None:
    """A `types { mime ext...; }` block: extension (lower-cased) -> MIME type; an
    extension mentioned again is reported as a duplicate and takes the later type."""
    if not block.is_block:
        diags.error(block.loc, 'directive "types" has no opening "{"')
        return None
    types: dict[str, str] = {}
    for node in _expand(block.children or (), diags, include):
        if node.is_block or not node.args:
            diags.error(node.loc, 'invalid number of arguments in "types" directive')
            continue
        for ext in node.arg_texts():
            low = ext.lower()
            if low in types:
                diags.warning(
                    node.loc,
                    f'duplicate extension "{ext}", content type: "{node.name}", '
                    f'previous content type: "{types[low]}"',
                )
            types[low] = node.name
    return types


def _expand(nodes: Sequence[Node], diags: Diagnostics, include: IncludeFn | None) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if node.name == "include" and len(node.args) == 1 and not node.is_block:
            if include is None:
                diags.error(node.loc, "include is not supported here")
            else:
                out.extend(_expand(include(node.args[0].text, node.loc, diags), diags, include))
            continue
        out.append(node)
    return out
