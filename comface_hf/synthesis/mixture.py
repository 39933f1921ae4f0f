"""Several generators in one run, each owning its attributes (the paper's StyleGAN + StyleGAN3 split).

The paper edits weight, age and smile with StyleGAN and the 40 CelebA attributes with StyleGAN3. A
:class:`GeneratorMixture` presents such a set as one generator: its attributes are the members' attributes in order,
an attribute index is routed to the member that owns it, and each member renders its part of a batch. The pair
sampler draws attributes uniformly, so each batch mixes the members in proportion to their attribute counts
(3 : 40 in the paper), and x and y of a pair always come from the same member (same identity, same attribute).

An identity number means a different person in each member (each has its own latent space); a pair never crosses
members, so this is the paper's setting.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .attributes import resolve_attribute


def routing_inputs(identities: Any, attributes: Any, alphas: Any, num_attributes: int) -> tuple:
    """``render`` inputs of a generator that routes rows to others: CPU ``(int64[B], int64[B], float32[B])``, the
    attribute indices checked (each routed generator checks its own alphas)."""
    identities = torch.as_tensor(identities).reshape(-1).cpu()
    attributes = torch.as_tensor(attributes).reshape(-1).cpu().long()
    alphas = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1).cpu()
    if len(attributes) and (int(attributes.min()) < 0 or int(attributes.max()) >= num_attributes):
        raise IndexError(f"attribute index out of range: valid indices are 0..{num_attributes - 1}")
    return identities, attributes, alphas


class GeneratorMixture:
    """One ``render`` over several generators with disjoint attribute sets.

    Args:
        members: generators with ``render(identities, attributes, alphas)`` and ``attribute_names``, all producing
            the same image size.
        labels: a short name per member (for the config and the model card).
    """

    name = "comface-mixture"
    version = "1.0.0"

    def __init__(self, members: Sequence[Any], labels: Sequence[str] | None = None) -> None:
        if len(members) < 1:
            raise ValueError("A mixture needs at least one generator.")
        self.members = list(members)
        self.labels = list(labels) if labels is not None else [f"generator_{i}" for i in range(len(members))]
        if len(self.labels) != len(self.members):
            raise ValueError(f"{len(self.labels)} labels for {len(self.members)} generators")
        owner: dict[str, str] = {}
        for label, member in zip(self.labels, self.members):
            for attribute in member.attribute_names:
                if attribute in owner:
                    raise ValueError(
                        f"Attribute {attribute!r} is edited by both {owner[attribute]!r} and {label!r}: each attribute "
                        "must belong to exactly one generator. Remove it from one generator's attribute list."
                    )
                owner[attribute] = label
        self.attribute_names = [a for m in self.members for a in m.attribute_names]
        counts = [len(m.attribute_names) for m in self.members]
        self.member_of = torch.repeat_interleave(torch.arange(len(self.members)), torch.tensor(counts))
        self.offset = torch.tensor([0] + counts[:-1]).cumsum(0)
        self.alpha_range = (max(getattr(m, "alpha_range", (-5, 5))[0] for m in self.members),
                            min(getattr(m, "alpha_range", (-5, 5))[1] for m in self.members))

    def attribute_index(self, name: str) -> int:
        return resolve_attribute(name, self.attribute_names)

    def shares(self) -> dict[str, float]:
        """Expected share of each member's images in a batch (attributes drawn uniformly)."""
        total = len(self.attribute_names)
        return {label: len(m.attribute_names) / total for label, m in zip(self.labels, self.members)}

    @torch.no_grad()
    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        identities, attributes, alphas = routing_inputs(identities, attributes, alphas, len(self.attribute_names))
        member = self.member_of[attributes]
        out = None
        for k, generator in enumerate(self.members):
            rows = (member == k).nonzero().flatten()
            if len(rows) == 0:
                continue
            images = generator.render(identities[rows], attributes[rows] - self.offset[k], alphas[rows])
            if out is None:
                out = images.new_empty((len(attributes), *images.shape[1:]))
            elif images.shape[1:] != out.shape[1:]:
                raise ValueError(
                    f"{self.labels[k]!r} renders {tuple(images.shape[1:])} images, another generator "
                    f"{tuple(out.shape[1:])}: give every generator the same image_size."
                )
            out[rows.to(out.device)] = images
        if out is None:
            raise ValueError("render needs at least one (identity, attribute, alpha).")
        return out

    def describe(self) -> list[dict]:
        shares = self.shares()
        out = [{"label": label, "share": shares[label], **(m.describe() if hasattr(m, "describe") else
                {"generator_class": type(m).__name__, "attributes": list(m.attribute_names)})}
               for label, m in zip(self.labels, self.members)]
        for d, m in zip(out, self.members):
            terms = getattr(getattr(m, "G", None), "data_terms", None)
            if terms:  # e.g. the DCGAN's DigiFace-1M research-only licence, carried into config.json and the card
                d["data_terms"] = terms
        return out


class AttributeSubset:
    """A generator restricted to some of its attributes (e.g. the embedded renderer owning a few in a mixture)."""

    def __init__(self, generator: Any, names: Sequence[str]) -> None:
        self.generator = generator
        self.attribute_names = list(names)
        self.index = torch.tensor([generator.attribute_index(n) for n in self.attribute_names])
        self.alpha_range = getattr(generator, "alpha_range", (-5.0, 5.0))

    def attribute_index(self, name: str) -> int:
        return resolve_attribute(name, self.attribute_names)

    def render(self, identities: torch.Tensor, attributes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        return self.generator.render(identities, self.index[torch.as_tensor(attributes).long().cpu()], alphas)

    def describe(self) -> dict:
        g = self.generator
        return {"generator_class": type(g).__name__, "version": getattr(g, "version", None),
                "attributes": list(self.attribute_names)}


__all__ = ["AttributeSubset", "GeneratorMixture", "routing_inputs"]
