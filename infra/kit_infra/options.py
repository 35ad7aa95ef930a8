"""Resource options for a component's children.

Pulumi does not pass a component's `depends_on` on to the resources inside it: a bucket inside a component that
depends on the API services would still be created while `storage.googleapis.com` is being enabled, and fail on a
fresh project. Children get the component's dependencies explicitly.
"""

from __future__ import annotations

import pulumi


def member_slug(member: str) -> str:
    """An IAM member (`user:a@b.com`) as a piece of a Pulumi resource name (`a-at-b-com`)."""
    return member.split(":", 1)[1].replace("@", "-at-").replace(".", "-")


def children_of(component: pulumi.ComponentResource, opts: pulumi.ResourceOptions | None, *also: pulumi.Resource,
                **extra) -> pulumi.ResourceOptions:
    inherited = list((opts.depends_on if opts else None) or [])
    return pulumi.ResourceOptions(parent=component, depends_on=[*inherited, *also], **extra)
