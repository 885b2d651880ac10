"""Recipes (launchers): clusters described as data plus templates.

A recipe is a YAML file validated against :data:`cm.recipes.schema.RECIPE`, with
per-role cloud-init user-data templates and configuration-file templates next to
it.  Shipped recipes live in ``launchers/`` (package ``cm.launchers``), the user's
own in ``$CM_HOME/launchers/``; the user's win on a name clash.
Jinja2 and jsonschema are imported only when a recipe is loaded or rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cm.errors import ConfigError, NotFound, UsageError

SUFFIXES = (".yaml", ".yml")


def shipped_dir() -> Path:
    """The shipped recipes: installed as cm/launchers, or the source tree's launchers/."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "launchers", here.parent / "launchers"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("cm's shipped launchers are missing; reinstall cm")


def user_dir(home: Path) -> Path:
    return home / "launchers"


def _files(home: Path) -> dict[str, Path]:
    """Recipe name -> file; the user's recipes shadow shipped ones of the same name."""
    found: dict[str, Path] = {}
    for directory in (shipped_dir(), user_dir(home)):
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.suffix in SUFFIXES and path.is_file():
                    found[path.stem] = path
    return found


def names(home: Path) -> list[str]:
    return sorted(_files(home))


def find(home: Path, name: str) -> Recipe:
    """The recipe called ``name``; an unknown one is a usage error listing the known ones."""
    files = _files(home)
    if name not in files:
        raise NotFound(f"unknown launcher '{name}' (known: {', '.join(sorted(files)) or 'none'}; "
                       f"add your own in {user_dir(home)})")
    return load(files[name])


def by_command(home: Path, command: str) -> Recipe:
    """The recipe whose ``command`` is ``command`` (`cm slurm`), else the one of that name."""
    for path in _files(home).values():
        recipe = load(path)
        if recipe.data.get("command") == command:
            return recipe
    return find(home, command)


def all_recipes(home: Path) -> list[Recipe | ConfigError]:
    """Every recipe, or the error that makes one unusable (a list still shows the rest)."""
    out: list[Recipe | ConfigError] = []
    for path in _files(home).values():
        try:
            out.append(load(path))
        except ConfigError as exc:
            out.append(exc)
    return out


def load(path: Path) -> Recipe:
    """Read and validate one recipe file; an error names the file, the key and what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    _validate(path, data)
    recipe = Recipe(path, data)
    recipe.check_files()
    return recipe


def _validate(path: Path, data: Any) -> None:
    import jsonschema

    from cm.recipes.schema import RECIPE

    validator = jsonschema.Draft202012Validator(RECIPE)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        message = error.message.replace("Additional properties are not allowed", "unknown key")
    else:
        message = error.message
    raise ConfigError(f"{path}: key '{key}': {message}")


class Recipe:
    """One validated recipe."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.name: str = data["name"]
        self.roles: dict[str, dict[str, Any]] = data["roles"]

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def command(self) -> str:
        return str(self.data.get("command", ""))

    @property
    def description(self) -> str:
        return str(self.data.get("description", "")).strip()

    def check_files(self) -> None:
        """Every template the recipe names exists next to it."""
        named = {f"roles.{r}.user_data": spec["user_data"] for r, spec in self.roles.items()}
        named.update({f"files.{k}": v for k, v in self.data.get("files", {}).items()})
        for key, rel in named.items():
            if not (self.directory / rel).is_file():
                raise ConfigError(f"{self.path}: key '{key}': template '{rel}' not found in {self.directory}")
        for role, spec in self.roles.items():
            for need in spec.get("needs", []):
                if need not in self.roles:
                    raise ConfigError(f"{self.path}: key 'roles.{role}.needs': unknown role '{need}'")
        resize = self.data.get("resize")
        if resize and resize["role"] not in self.roles:
            raise ConfigError(f"{self.path}: key 'resize.role': unknown role '{resize['role']}'")

    def counts(self, n: int | None) -> dict[str, int]:
        """Nodes per role for ``-n N``; a bad N is a usage error."""
        uses_n = any(spec.get("count", 1) == "n" for spec in self.roles.values())
        if uses_n:
            if n is None:
                raise UsageError(f"launcher '{self.name}' needs -n N (the number of "
                                 f"{self.resize_role or 'worker'} nodes)")
            low, high = int(self.data.get("min_n", 1)), int(self.data.get("max_n", 1000))
            if not low <= n <= high:
                raise UsageError(f"-n must be between {low} and {high} for launcher '{self.name}', not {n}")
        elif n is not None:
            raise UsageError(f"launcher '{self.name}' has a fixed size; it takes no -n")
        return {role: (n if spec.get("count", 1) == "n" else int(spec.get("count", 1)))  # type: ignore[misc]
                for role, spec in self.roles.items()}

    @property
    def resize_role(self) -> str:
        return str((self.data.get("resize") or {}).get("role", ""))

    def params(self, given: dict[str, str]) -> dict[str, Any]:
        """The recipe's parameters with ``--param K=V`` applied; an unknown K is a usage error."""
        declared = self.data.get("params", {})
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(f"launcher '{self.name}' has no parameter '{unknown[0]}' (parameters: {known})")
        return {k: given.get(k, spec["default"]) for k, spec in declared.items()}

    def order(self) -> list[list[str]]:
        """Roles in boot waves: a role boots once the roles it needs have addresses."""
        waves: list[list[str]] = []
        placed: set[str] = set()
        while len(placed) < len(self.roles):
            wave = [r for r, s in self.roles.items() if r not in placed and set(s.get("needs", [])) <= placed]
            if not wave:
                raise ConfigError(f"{self.path}: key 'roles': the roles' 'needs' form a cycle")
            waves.append(wave)
            placed.update(wave)
        return waves

    # -- rendering ---------------------------------------------------------------------------
    def render(self, template: str, context: dict[str, Any]) -> str:
        from cm.recipes.render import render

        return render(self, template, context)

    def render_files(self, context: dict[str, Any]) -> dict[str, str]:
        """Every configuration file of the recipe, rendered (each also renders on its own)."""
        return {name: self.render(rel, context) for name, rel in self.data.get("files", {}).items()}

    def render_user_data(self, role: str, context: dict[str, Any]) -> str:
        files = self.render_files(context)
        return self.render(self.roles[role]["user_data"], {**context, "files": files})

    def render_outputs(self, context: dict[str, Any]) -> dict[str, str]:
        from cm.recipes.render import render_string

        return {k: render_string(self, k, v, context) for k, v in self.data.get("outputs", {}).items()}
