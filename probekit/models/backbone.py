"""The Backbone contract: a network, its noise schedule, and a registry of layers to read out.

``features(x_noisy, point, layers, pooling, labels)`` runs one forward pass and returns the pooled
activation of every requested layer. ``labels`` (the samples' class ids) reach the network call of
families whose conditioning depends on them (a Stable Diffusion prompt with the class name in it);
every other family ignores them. :class:`HookedBackbone` is the one implementation for torch
networks: it owns the layer table, aliases, selection by name, weight hashing and device moves,
and reads layers through :func:`.trace.trace` (hooks only inside the call, early stop after the
deepest requested layer). A model family is an adapter over it: its layer table and how to call
the network at a grid point.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from probekit.core.errors import ProbekitError
from probekit.core.pooling import Pooling
from probekit.core.schedule import NoiseSchedule
from probekit.core.types import GridPoint, LayerInfo
from probekit.models.kinds import SEPARATOR, KindContext, find_kinds
from probekit.models.trace import Capture, module_capture, primary_output, run_traced
from probekit.models.weight_hash import remembered

__all__ = ["Backbone", "HookedBackbone", "LayerInfo", "state_dict_sha256"]


class Backbone(ABC):
    """A diffusion network (or a baseline) seen as a feature extractor over a noise grid."""

    model_id: str
    framework: str
    schedule: NoiseSchedule
    #: the (H, W) the network expects, or None to keep the data's own size
    input_size: tuple[int, int] | None
    #: the channel count the network expects, or None to keep the data's own
    input_channels: int | None
    #: the pixel range the network was trained on, e.g. (-1.0, 1.0)
    value_range: tuple[float, float]

    @property
    def image_size(self) -> int | None:
        """The square side, in pixels, that images of mixed sizes are decoded to by default
        (:mod:`probekit.data.resize`): the side of a square ``input_size``, else None.
        """
        size = self.input_size
        return int(size[0]) if size is not None and size[0] == size[1] else None

    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """Every readable layer, in forward order."""

    def kind_layers(self) -> list[LayerInfo]:
        """Every activation kind inside the blocks (``HOST:KIND``, :mod:`probekit.models.kinds`), in
        forward order; each has the depth and stage of the block output that contains it. None for
        backbones without kinds.
        """
        return []

    def default_layers(self) -> list[str]:
        return [layer.name for layer in self.layers()]

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean inputs -> the space the diffusion runs in (identity for pixel-space models).

        Latent models (DiT + VAE) encode here. Extraction calls it once per batch of clean
        images and reuses the result for every grid point and noise draw, so an expensive encoder
        runs once per image, not once per (image, t).
        """
        return x0

    @abstractmethod
    def features(
        self,
        x_noisy: torch.Tensor,
        point: GridPoint,
        layers: Sequence[str],
        pooling: Pooling,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{layer: (B, D) pooled features}`` from one forward of ``x_noisy`` at ``point``.

        ``labels`` (B,) are the samples' class ids; only label-conditioned backbones read them.
        """

    @abstractmethod
    def forward(self, x_noisy: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The bare network forward, no hooks (the baseline of the extraction benchmark)."""

    def set_prompt(self, template: str, class_names: Sequence[str]) -> None:
        """Condition every forward on ``template`` with each sample's class name substituted.

        Only text-conditioned families (``sd:``) have a prompt; the others refuse.
        """
        raise ProbekitError(
            f"--prompt applies to text-conditioned models (sd:) only; {self.model_id} ({self.framework}) has no prompt"
        )

    def cache_attrs(self) -> dict[str, object]:
        """What the cache records about this backbone besides its id, framework and weights (e.g. the prompt)."""
        return {}

    #: images (B, 3, H, W) the latent encoder may hold in memory at once, in bytes (None: the default
    #: of :func:`probekit.models.vae.default_budget`); pixel-space models ignore it
    vae_budget: int | None = None

    @abstractmethod
    def weights_sha256(self) -> str:
        """Hash identifying the weights (see :func:`state_dict_sha256`)."""

    def encoder_sha256(self) -> str | None:
        """Hash of the latent encoder's weights and config (keys stored latents), or None without an encoder."""
        return None

    def configs(self) -> dict[str, object]:
        """Every config besides the weights that decides the features, by role (see
        :mod:`probekit.models.fingerprint`); none for backbones without one.
        """
        return {}

    def fingerprint(self) -> str:
        """SHA-256 of the weights, the configs, the schedule and the prompt (:func:`.fingerprint.describe_model`)."""
        from probekit.models.fingerprint import describe_model, fingerprint

        return fingerprint(describe_model(self))

    def known_hashes(self) -> dict[str, str]:
        """The weight hashes computed so far (to hand to other processes of one launch)."""
        return {}

    def adopt_hashes(self, hashes: dict[str, str]) -> None:  # noqa: B027 (optional: most backbones hash nothing)
        """Take hashes another process computed for the same weights (:meth:`known_hashes`)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def speed_up(self, *, channels_last: bool = False, compile: bool = False) -> list[str]:
        """Optional speed-ups of the wrapped network (``self.net``); returns what was applied.

        ``channels_last`` converts the weights (extraction converts inputs to match).
        ``compile`` runs ``torch.compile`` on the readable layers that contain no other readable
        layer: hooks sit on module calls outside the compiled code, so capture and early stop
        keep working, at the price of graph breaks between those layers.
        """
        net = getattr(self, "net", None)
        if not isinstance(net, nn.Module):
            return []
        applied = []
        if channels_last:
            net.to(memory_format=torch.channels_last)
            applied.append("channels_last")
        if compile:
            names = [layer.name for layer in self.layers()]
            leaves = [name for name in names if not any(other.startswith(name + ".") for other in names)]
            for name in leaves:
                module = net.get_submodule(name)
                module.forward = torch.compile(module.forward, dynamic=False)  # type: ignore[method-assign]
            applied.append(f"torch.compile on {len(leaves)} layers")
        return applied

    def to(self, device: torch.device | str) -> Backbone:
        return self


class HookedBackbone(Backbone):
    """A torch network read out by hooks. Adapters set ``net``, ``schedule``, ``model_id`` and the
    input attributes, call :meth:`_register` with their layer table, and implement :meth:`_run`.
    """

    net: nn.Module

    def _register(self, modules: Mapping[str, nn.Module], layers: Sequence[LayerInfo]) -> None:
        """Install the layer table: ``modules[layer.name]`` is the module whose output is that layer."""
        self._modules = {layer.name: modules[layer.name] for layer in layers}
        self._layers = list(layers)
        self._depth = {layer.name: layer.depth for layer in self._layers}
        self._canonical = {alias: layer.name for layer in self._layers for alias in (layer.name, *layer.aliases)}
        self._sha256: str | None = None

    @abstractmethod
    def _run(self, x: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Call the network on ``x`` at ``point`` (conditioning included); returns its raw output.

        ``labels`` are the samples' class ids, for families whose conditioning depends on them.
        """

    def layers(self) -> list[LayerInfo]:
        return list(self._layers)

    def features(
        self,
        x_noisy: torch.Tensor,
        point: GridPoint,
        layers: Sequence[str],
        pooling: Pooling,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        canonical = {name: self._canonical_name(name) for name in layers}
        if not any(SEPARATOR in name for name in canonical.values()):
            wanted: dict[str, nn.Module | Capture] = {name: self._modules[name] for name in canonical.values()}
            deepest = max(wanted, key=lambda name: self._depth[name])
        else:  # kinds: ordered by the completion order recorded when they were found
            kinds = self._kinds()
            wanted = {name: kinds[name] if SEPARATOR in name else self._modules[name] for name in canonical.values()}
            deepest = max(wanted, key=lambda name: self._kind_order[name])
        captured = run_traced(
            lambda: self._run(x_noisy, point, labels),
            wanted,
            self._pool(pooling),
            stop_after=deepest,
            select=self._output,
        )
        return {name: captured[canonical[name]] for name in layers}

    def kind_layers(self) -> list[LayerInfo]:
        self._kinds()
        return list(self._kind_infos)

    def _kind_context(self) -> KindContext:
        """What kind captures need to know about the input (families with joint token sequences override it)."""
        return KindContext()

    def _blank_input(self) -> torch.Tensor:
        """A (1, C, H, W) zero input of what :meth:`_run` reads (latents for latent models)."""
        raise ProbekitError(f"{self.model_id} ({self.framework}) lists no activation kinds: select block outputs")

    def _kinds(self) -> dict[str, Capture]:
        """The captures of every kind, found on first use (one blank forward records which kinds
        fire, their shapes and their order), so models used for block outputs only pay nothing.
        """
        found = self.__dict__.get("_kind_captures")
        if found is not None:
            return found
        captures = {name: capture for name, _, capture in find_kinds(self.net, self._kind_context())}
        blocks = {layer.name: module_capture(self._modules[layer.name], self._output) for layer in self._layers}
        blank = self._blank_input().to(self.device)
        point = self.schedule.point(self.schedule.default_grid()[0])
        shapes = run_traced(
            lambda: self._run(blank, point), {**captures, **blocks}, pooling=lambda tensor: torch.tensor(tensor.shape)
        )
        self._kind_order = {name: order for order, name in enumerate(shapes)}
        infos: list[LayerInfo] = []
        waiting: list[tuple[str, torch.Tensor]] = []
        by_block = {layer.name: layer for layer in self._layers}
        for name, shape in shapes.items():
            if SEPARATOR in name:
                waiting.append((name, shape))
                continue
            # Kinds that finished before this block output belong to it (its depth and stage).
            infos.extend(_kind_info(kind, kind_shape, by_block[name]) for kind, kind_shape in waiting)
            waiting = []
        last = max(self._layers, key=lambda layer: layer.depth)
        infos.extend(_kind_info(kind, kind_shape, last) for kind, kind_shape in waiting)
        self._kind_infos = infos
        self._kind_captures = {info.name: captures[info.name] for info in infos}
        return self._kind_captures

    def module_of(self, name: str) -> nn.Module:
        """The module whose output is layer ``name`` (a name or an alias)."""
        return self._modules[self._canonical_name(name)]

    def _output(self, output: object) -> torch.Tensor:
        """The tensor a layer's module output stands for (families whose blocks return several streams override it)."""
        return primary_output(output)

    def _pool(self, pooling: Pooling) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the trace applies to each layer's output (families with special tokens override it)."""
        return pooling

    def forward(self, x_noisy: torch.Tensor, point: GridPoint, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self._run(x_noisy, point, labels)

    def _canonical_name(self, name: str) -> str:
        if SEPARATOR in name and name in self._kinds():
            return name
        if name not in self._canonical:
            raise ProbekitError(self._unknown_layer(name))
        return self._canonical[name]

    def _unknown_layer(self, name: str) -> str:
        if SEPARATOR in name:
            return f"unknown activation {name!r}: run `probekit layers --kinds --model {self.model_id}` to list them"
        return f"unknown layer {name!r}: run `probekit layers --model {self.model_id}` to list them"

    def _weight_modules(self) -> dict[str, nn.Module]:
        """The modules whose weights decide the features, by role (one entry: the network)."""
        return {"net": self.net}

    #: identifies the files the weights were loaded from (:func:`.weight_hash.files_key`); with it,
    #: hashes are remembered across processes and an unchanged checkpoint is not hashed again
    weights_key: str | None = None

    def weights_sha256(self) -> str:
        """:func:`state_dict_sha256` of the network; with several modules, a hash over ``role:hash`` pairs."""
        if self._sha256 is None:
            modules = self._weight_modules()
            if len(modules) == 1:
                self._sha256 = self.module_sha256(next(iter(modules)))
            else:
                combined = "|".join(f"{role}:{self.module_sha256(role)}" for role in modules)
                self._sha256 = hashlib.sha256(combined.encode()).hexdigest()
        return self._sha256

    def module_sha256(self, role: str) -> str:
        """:func:`state_dict_sha256` of one weight module (``net``, ``unet``, ``vae``, ...), remembered
        under :attr:`weights_key` when the weights came from local files.
        """
        cache = self.__dict__.setdefault("_role_sha256", {})
        if role not in cache:
            module = self._weight_modules()[role]
            cache[role] = remembered(self.weights_key, role, lambda: state_dict_sha256(module))
        return cache[role]

    def encoder_sha256(self) -> str | None:
        """The VAE's weights and its loaded config: ``scaling_factor``, ``shift_factor``, ``latents_mean``
        and every other field shape the stored latents without changing a tensor.
        """
        modules = self._weight_modules()
        if "vae" not in modules:
            return None
        from probekit.models.fingerprint import fingerprint, module_config

        return fingerprint({"weights": self.module_sha256("vae"), "config": module_config(modules["vae"])})

    def configs(self) -> dict[str, object]:
        """Each weight module's loaded config, by role."""
        from probekit.models.fingerprint import module_config

        return {role: module_config(module) for role, module in self._weight_modules().items()}

    def known_hashes(self) -> dict[str, str]:
        roles = dict(self.__dict__.get("_role_sha256", {}))
        return {**roles, **({"*": self._sha256} if self._sha256 is not None else {})}

    def adopt_hashes(self, hashes: dict[str, str]) -> None:  # noqa: B027 (optional: most backbones hash nothing)
        self.__dict__.setdefault("_role_sha256", {}).update(
            {role: value for role, value in hashes.items() if role != "*"}
        )
        if "*" in hashes:
            self._sha256 = hashes["*"]

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> HookedBackbone:
        for module in self._weight_modules().values():
            module.to(device)
        return self


def _kind_info(name: str, shape: torch.Tensor, block: LayerInfo) -> LayerInfo:
    """The layer record of kind ``name`` of activation ``shape``, inside ``block``."""
    dims = [int(size) for size in shape]
    if len(dims) == 4:
        channels, resolution = dims[1], f"{dims[2]}x{dims[3]}"
    elif len(dims) == 3:
        channels, resolution = dims[2], f"{dims[1]} tokens"
    else:
        channels, resolution = dims[-1], "vector"
    return LayerInfo(name=name, stage=block.stage, depth=block.depth, channels=channels, resolution=resolution)


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (name, dtype, shape, bytes), in name order.

    Independent of the file format the weights came in, so a safetensors and a .bin copy of the
    same weights, or a random init with the same seed, hash the same.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        # Logical element order, whatever the memory format (channels_last weights hash the same).
        tensor = state[name].detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        tensor = tensor.clone(memory_format=torch.contiguous_format).reshape(-1)
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
