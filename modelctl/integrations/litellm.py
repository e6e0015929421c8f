"""LiteLLM integration: a router config from routing documents, and sticky routing inside ``litellm.Router``.

:func:`router_config` turns routing documents (``modelctl resolve NAME --json``, or the files a
rendered ConfigMap mounts) into a LiteLLM Router config: per model, one deployment per served
version in the model's group (the active and the canary, weighted by their percents), the shadow in
a group of its own (``NAME/shadow``, never served), and the bundles' fallbacks as fallback groups
``NAME/fallback-1``, ``NAME/fallback-2``, ... that the model group falls back to in order.

:class:`ModelctlStrategy` is a LiteLLM routing plugin (``Router.register_plugin``): it sends each
request to the deployment of the version :mod:`modelctl.serving` picks for the request's key (the
bucket rule of ``resolve --key``), and in a fallback group to that version's own fallback.
:class:`Gateway` is what a process calls per request: it picks, puts the bundle's prompt first as
the system message, routes through LiteLLM (the deployment carries the bundle's config), mirrors the
request to the shadow when the pick says so (in the background; its outcome never reaches the
caller) and records :mod:`modelctl.integrations.metrics`.

LiteLLM is imported by :func:`attach` and :class:`Gateway` only; :func:`router_config` is plain
Python, so ``modelctl render --format litellm`` does not need LiteLLM installed.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..serving import Bundle, Pick, digest

if TYPE_CHECKING:
    from ..documents import RoutingDocument
    from ..serving import Router as ServingRouter
    from .metrics import ServingMetrics

__all__ = ["router_config", "deployment_id", "route_deployment_id", "route_group", "attach", "ModelctlStrategy",
           "Gateway", "prompts_from_directory", "KEY", "VERSION", "ATTRIBUTES"]

KEY = "modelctl_key"            # request metadata: the routing key (else the request's `user`)
ROUTE = "modelctl_route"        # request metadata: the route the request was picked on
VERSION = "modelctl_version"    # request metadata: the version already picked for this request
ATTRIBUTES = "modelctl_attributes"  # request metadata: the caller's attributes (a canary's segment reads them)
SHADOW_SUFFIX = "/shadow"
FALLBACK_SUFFIX = "/fallback-"
ROUTE_INFIX = "/route/"         # NAME/route/R: a route's group; NAME/route/R/fallback-N: its N-th fallback


def route_group(name: str, route: str) -> str:
    """The LiteLLM model group of a route: ``NAME/route/R``."""
    return f"{name}{ROUTE_INFIX}{route}"


def route_deployment_id(name: str, route: str, version: str, fallback: Mapping[str, Any] | None = None,
                        step: int = 0) -> str:
    """``NAME@VERSION~R`` for a version serving route R; ``NAME~R#fallback-N:provider/id`` for its chain."""
    if fallback is None:
        return f"{name}@{version}~{route}"
    return f"{name}~{route}#fallback-{step}:{fallback['provider']}/{fallback['id']}"

PromptSource = Callable[[Bundle], "str | None"]


def deployment_id(name: str, version: str, fallback: int = 0) -> str:
    """The LiteLLM ``model_info.id`` of a version's deployment (``NAME@VERSION``, ``#fallback-N`` for its fallbacks)."""
    return f"{name}@{version}" + (f"#fallback-{fallback}" if fallback else "")


def _params(name: str, version: str, role: str, entry: Mapping[str, Any], model: Mapping[str, Any],
            weight: float | None, fallback: int = 0) -> dict[str, Any]:
    litellm_params: dict[str, Any] = {"model": f"{model['provider']}/{model['id']}"}
    # the bundle's config is what was judged: every request to this version is sent with it
    litellm_params.update({k: v for k, v in sorted((entry.get("config") or {}).items())})
    if weight is not None:
        litellm_params["weight"] = weight
    prompt = entry.get("prompt") or {}
    info: dict[str, Any] = {"id": deployment_id(name, version, fallback), "modelctl_model": name,
                            "modelctl_version": version, "modelctl_role": role,
                            "modelctl_bundle_sha256": digest(dict(entry))}
    if prompt.get("sha256"):
        info["modelctl_prompt_sha256"] = prompt["sha256"]
    if model.get("adapter"):
        info["modelctl_adapter"] = model["adapter"]
    if fallback:
        info["modelctl_fallback"] = fallback
    group = name + (SHADOW_SUFFIX if role == "shadow" else f"{FALLBACK_SUFFIX}{fallback}" if fallback else "")
    return {"model_name": group, "litellm_params": litellm_params, "model_info": info}


def router_config(documents: Sequence[RoutingDocument] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A LiteLLM Router config (``model_list``, ``router_settings.fallbacks``) for routing documents; deterministic."""
    model_list: list[dict[str, Any]] = []
    fallbacks: list[dict[str, list[str]]] = []
    seen: set[str] = set()
    for doc in sorted(documents, key=lambda d: str(d["name"])):
        name = str(doc["name"])
        if name in seen:
            raise ValueError(f"model {name} has two routing documents; pass one per model")
        seen.add(name)
        active, canary, shadow = doc.get("active"), doc.get("canary"), doc.get("shadow")
        if active is None:
            continue  # nothing serves a model without an active version
        served = [("active", active)] + ([("canary", canary)] if canary else [])
        canary_pct = float(canary["percent"]) if canary else 0.0
        if canary and canary.get("segment"):
            # its percent is a share of a segment LiteLLM's own weighted pick cannot see: only the
            # routing plugin (attributes in the segment) sends requests to it
            canary_pct = 0.0
        for role, entry in served:
            weight = canary_pct if role == "canary" else 100.0 - canary_pct
            model_list.append(_params(name, entry["version"], role, entry, entry["model"], weight))
        if shadow:
            model_list.append(_params(name, shadow["version"], "shadow", shadow, shadow["model"], None))
        depth = 0
        for role, entry in served:
            chain = list(entry.get("fallbacks") or [])
            depth = max(depth, len(chain))
            for i, target in enumerate(chain, start=1):
                model_list.append(_params(name, entry["version"], role, entry, target, None, fallback=i))
        if depth:
            fallbacks.append({name: [f"{name}{FALLBACK_SUFFIX}{i}" for i in range(1, depth + 1)]})
        for route, served_route in sorted((doc.get("routes") or {}).items()):
            model_list += _route_deployments(name, route, served_route)
            chain = list((served_route.get("fallback") or {}).get("chain") or [])
            group = route_group(name, route)
            if chain:
                fallbacks.append({group: [f"{group}{FALLBACK_SUFFIX}{i}" for i in range(1, len(chain) + 1)]})
            elif depth:  # no chain of its own: the bundles' fallbacks, as for the model
                fallbacks.append({group: [f"{name}{FALLBACK_SUFFIX}{i}" for i in range(1, depth + 1)]})
    return {"model_list": model_list, "router_settings": {"fallbacks": fallbacks}}


def _route_deployments(name: str, route: str, served: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A route's group (its active and canary, weighted) and one group per fallback step.

    Step N of an ordered chain holds its N-th entry; a weighted chain's order differs per key, so
    every step holds every entry and :class:`ModelctlStrategy` takes the key's N-th.
    """
    out: list[dict[str, Any]] = []
    active, canary = served.get("active"), served.get("canary")
    if active is None:
        return out
    group = route_group(name, route)
    canary_pct = float(canary["percent"]) if canary else 0.0
    for role, entry in [("active", active)] + ([("canary", canary)] if canary else []):
        d = _params(name, entry["version"], role, entry, entry["model"], canary_pct if role == "canary"
                    else 100.0 - canary_pct)
        d["model_name"] = group
        d["model_info"].update(id=route_deployment_id(name, route, entry["version"]), modelctl_route=route)
        out.append(d)
    fallback = served.get("fallback") or {}
    chain = list(fallback.get("chain") or [])
    for step in range(1, len(chain) + 1):
        targets = chain if fallback.get("policy") == "weighted" else [chain[step - 1]]
        for target in targets:
            # the fallback model is sent the route's active bundle: its prompt and config
            d = _params(name, active["version"], "active", active, target, None, fallback=step)
            d["model_name"] = f"{group}{FALLBACK_SUFFIX}{step}"
            d["model_info"].update(id=route_deployment_id(name, route, active["version"], target, step),
                                   modelctl_route=route)
            out.append(d)
    return out


def prompts_from_directory(root: str | os.PathLike[str]) -> PromptSource:
    """Prompt texts read from a registry checkout (``root/<prompt.template>``), refused unless their sha256 matches."""
    base = os.path.realpath(os.fspath(root))
    cache: dict[str, str] = {}

    def load(bundle: Bundle) -> str | None:
        template, want = bundle.prompt.get("template"), bundle.prompt.get("sha256")
        if not template:
            return None
        if want in cache:
            return cache[want]
        path = os.path.realpath(os.path.join(base, template))
        if not path.startswith(base + os.sep):
            raise ValueError(f"prompt template {template!r} is outside {base}")
        with open(path, "rb") as f:
            raw = f.read()
        if want and hashlib.sha256(raw).hexdigest() != want:
            raise ValueError(f"{template} does not match the bundle's prompt.sha256 (the checkout is not at the "
                             "registry commit the routing document was resolved at)")
        text = raw.decode("utf-8")
        if want:
            cache[want] = text
        return text

    return load


def _inline_prompt(bundle: Bundle) -> str | None:
    text = bundle.prompt.get("text")
    return text if isinstance(text, str) else None


def _metadata(request_kwargs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    md = (request_kwargs or {}).get("metadata")
    return md if isinstance(md, Mapping) else {}


class ModelctlStrategy:
    """A LiteLLM routing plugin: requests for a modelctl model go to the deployment its bucket rule picks.

    The key is the request's ``metadata["modelctl_key"]``, else its ``user``; a request with
    neither gets a random key (so traffic still splits by the percents). ``metadata["modelctl_attributes"]``
    (a mapping) are the caller's attributes, which decide a canary limited to a segment; without
    them the request is outside every segment. ``metadata["modelctl_version"]``
    (set by :class:`Gateway`) pins the version picked already, so prompt and deployment agree
    even when the documents reload in between. Groups this router does not know are served by
    LiteLLM's weights, picked at random.
    """

    def __init__(self, litellm_router: Any, serving: ServingRouter):
        self.litellm_router = litellm_router
        self.serving = serving
        self._index: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _deployment(self, deployment: str) -> Any:
        found = self._index.get(deployment)
        if found is None:
            with self._lock:  # a deployment added since the last look: index the registry again
                self._index = {str(d["model_info"]["id"]): d for d in self.litellm_router.registry().all()}
                found = self._index.get(deployment)
        return found

    def choose(self, model: str, request_kwargs: Mapping[str, Any] | None) -> Any:
        """The deployment (an element of the router's model list) that serves this request, or None."""
        name, _, suffix = model.partition("/")
        snapshot = self.serving.snapshot
        if name not in snapshot:
            return self._weighted(model)
        md = _metadata(request_kwargs)
        if suffix.startswith(ROUTE_INFIX[1:]):
            return self._route(name, suffix[len(ROUTE_INFIX) - 1:], md, request_kwargs)
        if suffix == SHADOW_SUFFIX[1:]:
            shadow = snapshot.bundles(name)["shadow"]
            return self._deployment(deployment_id(name, shadow.version)) if shadow else None
        version = md.get(VERSION)
        if not isinstance(version, str):
            key = md.get(KEY, (request_kwargs or {}).get("user"))
            attributes = md.get(ATTRIBUTES)
            version = snapshot.pick(name, str(key) if key is not None else uuid.uuid4().hex,
                                    attributes=attributes if isinstance(attributes, Mapping) else None).version
        if suffix.startswith(FALLBACK_SUFFIX[1:]):
            try:
                number = int(suffix[len(FALLBACK_SUFFIX) - 1:])
            except ValueError:
                return None
            return self._deployment(deployment_id(name, version, number))  # None: this version has no such fallback
        if suffix:
            return self._weighted(model)
        return self._deployment(deployment_id(name, version))

    def _route(self, name: str, rest: str, md: Mapping[str, Any], request_kwargs: Mapping[str, Any] | None) -> Any:
        """A route's group (``R``) or fallback step (``R/fallback-N``): the key's version, or its N-th fallback."""
        route, _, step_text = rest.partition("/")
        key = md.get(KEY, (request_kwargs or {}).get("user"))
        pick = self.serving.snapshot.pick(name, str(key) if key is not None else uuid.uuid4().hex, route=route)
        pinned = md.get(VERSION)
        version: str = pinned if isinstance(pinned, str) else pick.version
        if not step_text:
            return self._deployment(route_deployment_id(name, route, version))
        try:
            step = int(step_text[len(FALLBACK_SUFFIX) - 1:])
        except ValueError:
            return None
        if step > len(pick.fallbacks) or pick.route is None:
            return None
        served = self.serving.snapshot.routes(name).get(route)
        active = served.active.version if served is not None else version
        return self._deployment(route_deployment_id(name, route, active, pick.fallbacks[step - 1], step))

    def _weighted(self, model: str) -> Any:
        import random

        group = list(self.litellm_router.registry().deployments(model))
        if not group:
            return None
        weights = [float(d["litellm_params"].get("weight") or 1) for d in group]
        return random.choices(group, weights=weights)[0] if sum(weights) > 0 else group[0]

    # the CustomRoutingStrategyBase interface LiteLLM calls
    async def async_get_available_deployment(self, model: str, messages: list[dict[str, str]] | None = None,
                                             input: str | list[object] | None = None,  # noqa: A002 (LiteLLM's name)
                                             specific_deployment: bool | None = False,
                                             request_kwargs: dict[str, object] | None = None) -> Any:
        """LiteLLM's async pick: :meth:`choose`."""
        return self.choose(model, request_kwargs)

    def get_available_deployment(self, model: str, messages: list[dict[str, str]] | None = None,
                                 input: str | list[object] | None = None,  # noqa: A002 (LiteLLM's name)
                                 specific_deployment: bool | None = False,
                                 request_kwargs: dict[str, object] | None = None) -> Any:
        """LiteLLM's sync pick: :meth:`choose`."""
        return self.choose(model, request_kwargs)


def _strategy_class() -> type:
    # LiteLLM checks the plugin's base class; build the subclass only once LiteLLM is imported
    global _STRATEGY
    if _STRATEGY is None:
        from litellm.types.router import CustomRoutingStrategyBase

        _STRATEGY = type("ModelctlRoutingStrategy", (ModelctlStrategy, CustomRoutingStrategyBase), {})
    return _STRATEGY


_STRATEGY: type | None = None


def attach(litellm_router: Any, serving: ServingRouter) -> ModelctlStrategy:
    """Make ``litellm_router`` route modelctl models by the bucket rule (``Router.register_plugin``)."""
    strategy: ModelctlStrategy = _strategy_class()(litellm_router, serving)
    litellm_router.register_plugin(strategy)
    return strategy


class Gateway:
    """Serve requests through a ``litellm.Router`` as the registry says: sticky version, prompt, config, shadow, metrics.

    ``Gateway.build(serving_router)`` makes the LiteLLM router from :func:`router_config`;
    ``Gateway(litellm_router, serving_router)`` attaches to one you built (from the same config,
    with your own ``litellm_params`` added). ``prompts`` finds a bundle's prompt text (default: the
    text a rendered document carries inline; see :func:`prompts_from_directory`).
    """

    def __init__(self, litellm_router: Any, serving: ServingRouter, *, metrics: ServingMetrics | None = None,
                 prompts: PromptSource | None = None, clock: Callable[[], float] = time.perf_counter,
                 reload: bool = True):
        self.router = litellm_router
        self.serving = serving
        self.metrics = metrics
        self.prompts = prompts or _inline_prompt
        self.reload = reload
        self._clock = clock
        self._mirrors: set[asyncio.Task[Any]] = set()
        self.strategy = attach(litellm_router, serving)
        if metrics is not None:
            snapshot = serving.snapshot
            for name in snapshot.models():
                for role, bundle in snapshot.bundles(name).items():
                    if bundle is not None:
                        metrics.touch(name, bundle.version, role)

    @classmethod
    def build(cls, serving: ServingRouter, *, litellm_params: Mapping[str, Any] | None = None,
              router_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> Gateway:
        """A new ``litellm.Router`` from the serving router's documents (``litellm_params`` added to each deployment)."""
        from litellm.router import Router

        snapshot = serving.snapshot
        docs = [_document(snapshot, name) for name in snapshot.models()]
        config = router_config(docs)
        for deployment in config["model_list"]:
            deployment["litellm_params"].update(litellm_params or {})
        options: dict[str, Any] = {"num_retries": 0, **config["router_settings"], **(router_kwargs or {})}
        return cls(Router(model_list=config["model_list"], **options), serving, **kwargs)

    def _messages(self, bundle: Bundle, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        text = self.prompts(bundle)
        out = [dict(m) for m in messages]
        return ([{"role": "system", "content": text}] + out) if text else out

    def _request(self, pick: Pick, bundle: Bundle, key: str, messages: Sequence[Mapping[str, Any]],
                 kwargs: dict[str, Any], attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        metadata = dict(kwargs.pop("metadata", None) or {})
        metadata.update({KEY: key, VERSION: bundle.version, "modelctl_role": "shadow" if bundle is not pick.bundle
                         else pick.role})
        if attributes:
            metadata[ATTRIBUTES] = dict(attributes)
        # the config as loaded now (a reload may have changed it since the deployment was built);
        # parameters the caller passes explicitly win, as over any LiteLLM deployment's params
        return {**_thaw_config(bundle), **kwargs, "messages": self._messages(bundle, messages), "metadata": metadata}

    def pick(self, model: str, key: str, *, route: str | None = None,
             attributes: Mapping[str, Any] | None = None) -> Pick:
        """The serving client's pick, after a cheap reload check (a changed file is loaded first)."""
        if self.reload:
            self.serving.maybe_reload()
        return self.serving.pick(model, key, route=route, attributes=attributes)

    async def acompletion(self, model: str, messages: Sequence[Mapping[str, Any]], *, key: str,
                          segment: str | None = None, route: str | None = None,
                          attributes: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """``router.acompletion`` for ``key``: the version modelctl picks, its prompt and config; mirrors to the shadow.

        ``route``: pick on that route and send the request to its group (its fallback chain applies).
        ``attributes``: the caller's attributes (a canary limited to a segment serves only requests in
        it). A request in the canary's segment is counted under that segment unless ``segment`` says
        otherwise, so ``watch`` judges the canary against the active version within the segment.
        """
        pick = self.pick(model, key, route=route, attributes=attributes)
        if segment is None:
            segment = pick.segment
        if pick.mirror and pick.shadow is not None:
            request = self._request(pick, pick.shadow, key, messages, dict(kwargs), attributes)
            task = asyncio.get_running_loop().create_task(self._mirror(pick, pick.shadow, request, segment))
            self._mirrors.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._mirrors.discard)
        request = self._request(pick, pick.bundle, key, messages, kwargs, attributes)
        group = model
        if pick.route is not None and self.serving.snapshot.routes(model):
            group = route_group(model, pick.route)  # a document without routes serves every route as the model
            request["metadata"][ROUTE] = pick.route
        start = self._clock()
        try:
            response = await self.router.acompletion(model=group, **request)
        except Exception:
            self._observe(pick.model, pick.version, pick.role, start, True, None, segment)
            raise
        self._observe(pick.model, pick.version, pick.role, start, False, response, segment)
        return response

    async def _mirror(self, pick: Pick, shadow: Bundle, request: dict[str, Any], segment: str | None) -> None:
        start = self._clock()
        try:
            response = await self.router.acompletion(model=pick.model + SHADOW_SUFFIX, **request)
        except Exception:  # the shadow's failure is its own metric, never the caller's problem
            self._observe(pick.model, shadow.version, "shadow", start, True, None, segment)
            return
        self._observe(pick.model, shadow.version, "shadow", start, False, response, segment)

    async def drain(self) -> None:
        """Wait for the shadow mirrors in flight (at shutdown, or in a test)."""
        while self._mirrors:
            await asyncio.gather(*list(self._mirrors), return_exceptions=True)

    def _observe(self, model: str, version: str, role: str, start: float, error: bool, response: Any,
                 segment: str | None) -> None:
        if self.metrics is None:
            return
        cost = None
        hidden = getattr(response, "_hidden_params", None)
        if isinstance(hidden, Mapping) and isinstance(hidden.get("response_cost"), (int, float)):
            cost = float(hidden["response_cost"])
        self.metrics.observe(model, version, role, self._clock() - start, error=error, cost=cost, segment=segment)


def _thaw_config(bundle: Bundle) -> dict[str, Any]:
    config: dict[str, Any] = bundle.as_dict()["config"]
    return config


def _document(snapshot: Any, name: str) -> dict[str, Any]:
    """A routing document rebuilt from a serving snapshot (what router_config needs of it)."""
    bundles = snapshot.bundles(name)
    doc: dict[str, Any] = {"schema": "modelctl/v1", "name": name}
    for role in ("active", "canary", "shadow"):
        bundle = bundles[role]
        doc[role] = bundle.as_dict() if bundle is not None else None
    served = snapshot.routes(name)
    if served:
        doc["routes"] = {r: {"active": s.active.as_dict(), "canary": s.canary.as_dict() if s.canary else None,
                             "fallback": {"policy": s.policy, "chain": [dict(e) for e in s.chain]} if s.policy else None}
                         for r, s in served.items()}
    return doc
