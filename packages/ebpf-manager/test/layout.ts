// TypeScript decoders of the structs in include/clawker.h. Offsets and sizes are written out
// here by hand and checked against the compiler's layout (test/layout.test.ts), so a change on
// either side that is not mirrored fails the test.

/** How one field is stored. `ip4` is a u32 in network order; `*x4` are arrays of four. */
export type FieldKind = "u8" | "u16" | "u32" | "u64" | "ip4" | "ip4x4" | "u32x4" | "u64x4";

/** One field: name as in C, byte offset, kind. */
export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly kind: FieldKind;
}

/** One struct: its size and fields (padding fields included, so offsets can be checked). */
export interface Layout {
  readonly size: number;
  readonly fields: readonly Field[];
}

const widths: Record<FieldKind, number> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  ip4: 4,
  ip4x4: 16,
  u32x4: 16,
  u64x4: 32,
};

/** The byte width of a field kind. */
export function widthOf(kind: FieldKind): number {
  return widths[kind];
}

/** Every struct shared between the BPF programs and user space. */
export const layouts = {
  cg_config: {
    size: 32,
    fields: [
      { name: "proxy_addr", offset: 0, kind: "ip4" },
      { name: "dns_addr", offset: 4, kind: "ip4" },
      { name: "gateway_addr", offset: 8, kind: "ip4" },
      { name: "subnet_addr", offset: 12, kind: "ip4" },
      { name: "subnet_mask", offset: 16, kind: "ip4" },
      { name: "mark", offset: 20, kind: "u32" },
      { name: "dns_port", offset: 24, kind: "u16" },
      { name: "catchall_port", offset: 26, kind: "u16" },
      { name: "udp_port", offset: 28, kind: "u16" },
      { name: "flags", offset: 30, kind: "u16" },
    ],
  },
  dns_entry: {
    size: 48,
    fields: [
      { name: "identity", offset: 0, kind: "u32x4" },
      { name: "expires_ns", offset: 16, kind: "u64x4" },
    ],
  },
  route_key: {
    size: 8,
    fields: [
      { name: "identity", offset: 0, kind: "u32" },
      { name: "port", offset: 4, kind: "u16" },
      { name: "proto", offset: 6, kind: "u8" },
      { name: "gen", offset: 7, kind: "u8" },
    ],
  },
  route_val: {
    size: 4,
    fields: [
      { name: "listener_port", offset: 0, kind: "u16" },
      { name: "pad", offset: 2, kind: "u16" },
    ],
  },
  gateway_port: {
    size: 8,
    fields: [
      { name: "addr", offset: 0, kind: "ip4" },
      { name: "port", offset: 4, kind: "u16" },
      { name: "proto", offset: 6, kind: "u8" },
      { name: "pad", offset: 7, kind: "u8" },
    ],
  },
  settings: {
    size: 16,
    fields: [
      { name: "route_gen", offset: 0, kind: "u32" },
      { name: "events_per_sec", offset: 4, kind: "u32" },
      { name: "bypass_count", offset: 8, kind: "u32" },
      { name: "pad", offset: 12, kind: "u32" },
    ],
  },
  orig_dst: {
    size: 16,
    fields: [
      { name: "orig_addr", offset: 0, kind: "ip4" },
      { name: "redir_addr", offset: 4, kind: "ip4" },
      { name: "orig_port", offset: 8, kind: "u16" },
      { name: "redir_port", offset: 10, kind: "u16" },
      { name: "pad", offset: 12, kind: "u32" },
    ],
  },
  tuple_key: {
    size: 12,
    fields: [
      { name: "client_addr", offset: 0, kind: "ip4" },
      { name: "proxy_addr", offset: 4, kind: "ip4" },
      { name: "client_port", offset: 8, kind: "u16" },
      { name: "proxy_port", offset: 10, kind: "u16" },
    ],
  },
  cg_counters: {
    size: 64,
    fields: [
      { name: "allowed", offset: 0, kind: "u64" },
      { name: "redirected", offset: 8, kind: "u64" },
      { name: "denied", offset: 16, kind: "u64" },
      { name: "dns", offset: 24, kind: "u64" },
      { name: "events", offset: 32, kind: "u64" },
      { name: "events_dropped", offset: 40, kind: "u64" },
      { name: "window_ns", offset: 48, kind: "u64" },
      { name: "window_count", offset: 56, kind: "u32" },
      { name: "pad", offset: 60, kind: "u32" },
    ],
  },
  clawker_event: {
    size: 48,
    fields: [
      { name: "ts_ns", offset: 0, kind: "u64" },
      { name: "cgroup_id", offset: 8, kind: "u64" },
      { name: "orig_addr", offset: 16, kind: "ip4x4" },
      { name: "new_addr", offset: 32, kind: "ip4" },
      { name: "identity", offset: 36, kind: "u32" },
      { name: "orig_port", offset: 40, kind: "u16" },
      { name: "new_port", offset: 42, kind: "u16" },
      { name: "hook", offset: 44, kind: "u8" },
      { name: "verdict", offset: 45, kind: "u8" },
      { name: "proto", offset: 46, kind: "u8" },
      { name: "family", offset: 47, kind: "u8" },
    ],
  },
  decide_args: {
    size: 56,
    fields: [
      // an embedded cg_config (decoded with layouts.cg_config); 32 bytes like a u64x4
      { name: "cfg", offset: 0, kind: "u64x4" },
      { name: "addr", offset: 32, kind: "ip4" },
      { name: "mark", offset: 36, kind: "u32" },
      { name: "port", offset: 40, kind: "u16" },
      { name: "proto", offset: 42, kind: "u8" },
      { name: "pad", offset: 43, kind: "u8" },
      { name: "new_addr", offset: 44, kind: "ip4" },
      { name: "identity", offset: 48, kind: "u32" },
      { name: "new_port", offset: 52, kind: "u16" },
      { name: "verdict", offset: 54, kind: "u8" },
      { name: "pad2", offset: 55, kind: "u8" },
    ],
  },
} as const satisfies Record<string, Layout>;

/** A decoded field value: numbers, bigints (u64), dotted addresses, or arrays of them. */
export type Value = number | bigint | string | readonly (number | bigint | string)[];

function ip(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

function one(buf: Buffer, at: number, kind: FieldKind): Value {
  switch (kind) {
    case "u8":
      return buf.readUInt8(at);
    case "u16":
      return buf.readUInt16LE(at);
    case "u32":
      return buf.readUInt32LE(at);
    case "u64":
      return buf.readBigUInt64LE(at);
    case "ip4":
      return ip(buf, at);
    case "ip4x4":
      return [0, 1, 2, 3].map((i) => ip(buf, at + 4 * i));
    case "u32x4":
      return [0, 1, 2, 3].map((i) => buf.readUInt32LE(at + 4 * i));
    case "u64x4":
      return [0, 1, 2, 3].map((i) => buf.readBigUInt64LE(at + 8 * i));
  }
}

/** Decodes one struct from little-endian bytes (x86/arm64 hosts) into field name -> value. */
export function decode(layout: Layout, buf: Buffer): Record<string, Value> {
  if (buf.length !== layout.size) throw new Error(`expected ${layout.size} bytes, got ${buf.length}`);
  const out: Record<string, Value> = {};
  for (const f of layout.fields) out[f.name] = one(buf, f.offset, f.kind);
  return out;
}

/** Bytes from bpftool's JSON ("0x1f" strings). */
export function bytesOf(hex: readonly string[]): Buffer {
  return Buffer.from(hex.map((h) => Number.parseInt(h, 16)));
}
