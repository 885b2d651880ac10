"""`cm image`: the images of a cloud."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm import inventory
from cm.commands import (add_cloud_option, add_dryrun_option, add_list_options, add_show_options, completes,
                         list_records, show_record, subcommands, verb)

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List and show images; add a disk image file to a cloud (kvm, OpenStack); delete one."
EXAMPLE = "cm image add debian-12 ~/Downloads/debian-12-genericcloud-amd64.qcow2"
COLUMNS = ["name", "cloud", "status", "format", "size", "id"]


def list_images(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "image", COLUMNS)


def show_image(ctx: Context, args: Namespace) -> None:
    show_record(ctx, args, "image")


def add_image(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        ctx.say(f"would add image {args.name} from {args.path} to {cloud}")
        return
    image = ctx.provider(cloud).add_image(args.name, args.path)
    ctx.mirror.put("image", cloud, inventory.as_record(image))
    ctx.say(f"added image {image.name} to {cloud}")


def delete_image(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    inventory.known(ctx, "image", cloud, args.name)
    if args.dryrun:
        ctx.say(f"would delete image {args.name} from {cloud}")
        return
    ctx.provider(cloud).delete_image(args.name)
    ctx.mirror.remove("image", cloud, [args.name])
    ctx.say(f"deleted image {args.name} from {cloud}")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_list_options(verb(subs, "list", list_images, "list images from the mirror"), "image")
    add_show_options(verb(subs, "show", show_image, "show one image"), "image")
    add = verb(subs, "add", add_image, "upload a disk image file as an image (its format is detected)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("path", metavar="PATH",
                     help="a disk image file (qcow2 or raw; OpenStack also takes vmdk, vhd, vhdx, vdi, iso); "
                          "for direct kernel boot (kvm): kernel=KERNEL,initrd=INITRD, "
                          "or a directory holding one vmlinuz*/vmlinux* and one initrd*/initramfs*")
    add_cloud_option(add)
    add_dryrun_option(add)
    delete = verb(subs, "delete", delete_image, "delete an image from the cloud")
    completes(delete.add_argument("name", metavar="NAME"), "image")
    add_cloud_option(delete)
    add_dryrun_option(delete)
