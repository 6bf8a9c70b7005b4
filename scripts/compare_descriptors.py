"""Checks that our protobuf descriptors are wire-compatible with a reference set.

usage: python compare_descriptors.py REFERENCE.fds OURS.fds [--superset[=PKG,...]] [--known=NAME ...]

Both arguments are serialized FileDescriptorSets: REFERENCE from scripts/dump_descriptors.py
(what a real Python client ships), OURS from
`protoc --include_imports --descriptor_set_out=OURS.fds ...` over proto/proto.

For every message (nested ones included), enum and service the reference defines, ours must
define the same fully-qualified name, and:
  - messages: each field has the same name, number, type, type_name, label, oneof (by name),
    proto3_optional flag, default and field options; the map-entry flag and any other message
    options match; the defining file has the same syntax; shared fields are declared in the
    same relative order;
  - enums: each value has the same name and number;
  - services: each method has the same input and output types and streaming flags.
By default the match is exact within each package the reference defines: ours may not add
messages, enums, services, fields, oneofs, enum values or methods there. With --superset,
ours may add them (every reference definition must still match); --superset=PKG,... applies
that only to the listed packages and stays exact for the others.
File names, file options, json_name and comments are ignored. --known=NAME (repeatable) accepts,
and still prints, any difference that mentions the fully-qualified NAME: for documented,
deliberate divergences between two references that cannot both be matched.

Exit status: 0 when compatible, 1 with a list of differences otherwise, 2 on bad usage.
Depends only on the `protobuf` package.
"""
import sys

from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {v: k[len("TYPE_"):].lower() for k, v in FDP.Type.items()}
LABEL_NAMES = {v: k[len("LABEL_"):].lower() for k, v in FDP.Label.items()}


def load(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    return fds


def syntax_of(fdp):
    return fdp.syntax or "proto2"


def index(fds):
    """Flattens a descriptor set into {fq name: (kind, proto, package, syntax)}."""
    defs = {}

    def add_message(prefix, msg, pkg, syntax):
        name = f"{prefix}.{msg.name}"
        defs[name] = ("message", msg, pkg, syntax)
        for nested in msg.nested_type:
            add_message(name, nested, pkg, syntax)
        for enum in msg.enum_type:
            defs[f"{name}.{enum.name}"] = ("enum", enum, pkg, syntax)

    for fdp in fds.file:
        pkg = fdp.package
        prefix = f".{pkg}" if pkg else ""
        syntax = syntax_of(fdp)
        for msg in fdp.message_type:
            add_message(prefix, msg, pkg, syntax)
        for enum in fdp.enum_type:
            defs[f"{prefix}.{enum.name}"] = ("enum", enum, pkg, syntax)
        for svc in fdp.service:
            defs[f"{prefix}.{svc.name}"] = ("service", svc, pkg, syntax)
    return defs


def options_text(opts, drop=()):
    """A stable one-line rendering of an options message, without the named fields."""
    copy = type(opts)()
    copy.CopyFrom(opts)
    for name in drop:
        copy.ClearField(name)
    return " ".join(str(copy).split())


def oneof_name(msg, field):
    """The real (non-synthetic) oneof a field belongs to, or None."""
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return msg.oneof_decl[field.oneof_index].name


def real_oneofs(msg):
    names = set()
    for field in msg.field:
        name = oneof_name(msg, field)
        if name is not None:
            names.add(name)
    # Declared oneofs with no members still count as declarations.
    synthetic = {msg.oneof_decl[f.oneof_index].name for f in msg.field if f.proto3_optional}
    names.update(o.name for o in msg.oneof_decl if o.name not in synthetic)
    return names


def describe_field(msg, field):
    type_text = field.type_name or TYPE_NAMES.get(field.type, str(field.type))
    text = f"{LABEL_NAMES.get(field.label, field.label)} {type_text} {field.name} = {field.number}"
    oneof = oneof_name(msg, field)
    if oneof:
        text += f" (oneof {oneof})"
    return text


def compare_fields(name, ref, ours, superset, out):
    ours_by_number = {f.number: f for f in ours.field}
    ours_by_name = {f.name: f for f in ours.field}
    ref_numbers = {f.number for f in ref.field}
    for rf in ref.field:
        where = f"{name}.{rf.name} (#{rf.number})"
        of = ours_by_number.get(rf.number)
        if of is None:
            moved = ours_by_name.get(rf.name)
            hint = f"; ours has {rf.name} as #{moved.number}" if moved is not None else ""
            out.append(f"missing field {where}: {describe_field(ref, rf)}{hint}")
            continue
        checks = [
            ("name", rf.name, of.name),
            ("type", TYPE_NAMES.get(rf.type, rf.type), TYPE_NAMES.get(of.type, of.type)),
            ("type_name", rf.type_name, of.type_name),
            ("label", LABEL_NAMES.get(rf.label, rf.label), LABEL_NAMES.get(of.label, of.label)),
            ("oneof", oneof_name(ref, rf), oneof_name(ours, of)),
            ("proto3_optional", rf.proto3_optional, of.proto3_optional),
            ("default_value", rf.default_value if rf.HasField("default_value") else None,
             of.default_value if of.HasField("default_value") else None),
            ("extendee", rf.extendee, of.extendee),
            ("options", options_text(rf.options), options_text(of.options)),
        ]
        for what, want, got in checks:
            if want != got:
                out.append(f"field {where}: {what} differs: reference {want!r}, ours {got!r}")
        if of.type_name and not of.type_name.startswith("."):
            out.append(f"field {where}: our type_name {of.type_name!r} is not fully qualified")
    if not superset:
        for of in ours.field:
            if of.number not in ref_numbers:
                out.append(f"extra field {name}.{of.name} (#{of.number}): {describe_field(ours, of)}")

    # Declaration order of the fields both sides have.
    shared = ref_numbers & set(ours_by_number)
    ref_order = [f.number for f in ref.field if f.number in shared]
    our_order = [f.number for f in ours.field if f.number in shared]
    if ref_order != our_order:
        out.append(f"field order of {name} differs: reference {ref_order}, ours {our_order}")


def compare_message(name, ref, ours, superset, out):
    if ref.options.map_entry != ours.options.map_entry:
        out.append(f"message {name}: map_entry differs: reference {ref.options.map_entry}, "
                   f"ours {ours.options.map_entry}")
    ref_opts = options_text(ref.options, drop=("map_entry",))
    our_opts = options_text(ours.options, drop=("map_entry",))
    if ref_opts != our_opts:
        out.append(f"message {name}: options differ: reference {ref_opts!r}, ours {our_opts!r}")
    compare_fields(name, ref, ours, superset, out)
    ref_oneofs, our_oneofs = real_oneofs(ref), real_oneofs(ours)
    for missing in sorted(ref_oneofs - our_oneofs):
        out.append(f"missing oneof {name}.{missing}")
    if not superset:
        for extra in sorted(our_oneofs - ref_oneofs):
            out.append(f"extra oneof {name}.{extra}")
    if len(ref.extension_range) or len(ours.extension_range):
        ref_ranges = [(r.start, r.end) for r in ref.extension_range]
        our_ranges = [(r.start, r.end) for r in ours.extension_range]
        if ref_ranges != our_ranges and not (superset and not ref_ranges):
            out.append(f"message {name}: extension ranges differ: reference {ref_ranges}, ours {our_ranges}")


def compare_enum(name, ref, ours, superset, out):
    ours_values = {v.name: v.number for v in ours.value}
    ref_values = {v.name: v.number for v in ref.value}
    for vname, number in ref_values.items():
        if vname not in ours_values:
            out.append(f"missing enum value {name}.{vname} = {number}")
        elif ours_values[vname] != number:
            out.append(f"enum value {name}.{vname}: number differs: reference {number}, "
                       f"ours {ours_values[vname]}")
    if not superset:
        for vname, number in ours_values.items():
            if vname not in ref_values:
                out.append(f"extra enum value {name}.{vname} = {number}")
    if ref.value and ours.value and ref.value[0].number != ours.value[0].number:
        out.append(f"enum {name}: first (default) value differs: reference {ref.value[0].name}, "
                   f"ours {ours.value[0].name}")


def describe_method(m):
    cs = "stream " if m.client_streaming else ""
    ss = "stream " if m.server_streaming else ""
    return f"rpc {m.name}({cs}{m.input_type}) returns ({ss}{m.output_type})"


def compare_service(name, ref, ours, superset, out):
    ours_methods = {m.name: m for m in ours.method}
    ref_names = {m.name for m in ref.method}
    for rm in ref.method:
        om = ours_methods.get(rm.name)
        if om is None:
            out.append(f"missing method {name}.{rm.name}: {describe_method(rm)}")
            continue
        for what in ("input_type", "output_type", "client_streaming", "server_streaming"):
            want, got = getattr(rm, what), getattr(om, what)
            if want != got:
                out.append(f"method {name}.{rm.name}: {what} differs: reference {want!r}, ours {got!r}")
    if not superset:
        for om in ours.method:
            if om.name not in ref_names:
                out.append(f"extra method {name}.{om.name}: {describe_method(om)}")


def compare(ref_fds, our_fds, superset_pkgs):
    """Returns (differences, counts). superset_pkgs: None = exact everywhere, "*" = superset
    everywhere, else a set of package names compared as supersets."""

    def is_superset(pkg):
        return superset_pkgs == "*" or (superset_pkgs is not None and pkg in superset_pkgs)

    ref_defs, our_defs = index(ref_fds), index(our_fds)
    out = []
    counts = {"message": 0, "enum": 0, "service": 0}
    for name, (kind, ref, pkg, syntax) in ref_defs.items():
        counts[kind] += 1
        superset = is_superset(pkg)
        mine = our_defs.get(name)
        if mine is None:
            out.append(f"missing {kind} {name}")
            continue
        our_kind, ours, _, our_syntax = mine
        if our_kind != kind:
            out.append(f"{name}: reference defines a {kind}, ours a {our_kind}")
            continue
        if kind != "service" and syntax != our_syntax:
            out.append(f"{kind} {name}: file syntax differs: reference {syntax}, ours {our_syntax}")
        if kind == "message":
            compare_message(name, ref, ours, superset, out)
        elif kind == "enum":
            compare_enum(name, ref, ours, superset, out)
        else:
            compare_service(name, ref, ours, superset, out)

    ref_pkgs = {pkg for _, _, pkg, _ in ref_defs.values()}
    for name, (kind, _, pkg, _) in our_defs.items():
        if pkg in ref_pkgs and not is_superset(pkg) and name not in ref_defs:
            out.append(f"extra {kind} {name}")
    return out, counts, ref_pkgs


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    superset_pkgs = None
    known = []
    for flag in flags:
        if flag.startswith("--known="):
            known.append(flag.split("=", 1)[1])
        elif flag == "--superset":
            superset_pkgs = "*"
        elif flag.startswith("--superset="):
            superset_pkgs = {p for p in flag.split("=", 1)[1].split(",") if p}
        else:
            print(f"unknown option {flag}\n{__doc__}", file=sys.stderr)
            return 2
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ref_path, our_path = args
    diffs, counts, ref_pkgs = compare(load(ref_path), load(our_path), superset_pkgs)
    accepted = [d for d in diffs if any(k in d for k in known)]
    diffs = [d for d in diffs if d not in accepted]

    modes = []
    for pkg in sorted(ref_pkgs):
        sup = superset_pkgs == "*" or (superset_pkgs is not None and pkg in superset_pkgs)
        modes.append(f"{pkg or '(no package)'}: {'ours ⊇ reference' if sup else 'exact'}")
    print(f"reference {ref_path} vs ours {our_path}")
    print(f"  {'; '.join(modes)}")
    print(f"  compared {counts['message']} messages (nested included), {counts['enum']} enums, "
          f"{counts['service']} services")
    for d in accepted:
        print(f"  known difference (accepted): {d}")
    if diffs:
        print(f"INCOMPATIBLE: {len(diffs)} difference(s):")
        for d in diffs:
            print(f"  - {d}")
        return 1
    print("OK: compatible")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
