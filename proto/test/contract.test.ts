// The generated code against the hand-written contract fixture (API.md), in both directions.
//
// Two views of the generated code are checked:
// - the file descriptors ts-proto embeds (outputSchema=true): packages, services, methods, message
//   names, field names, numbers, types, labels, maps, reserved numbers, oneof names, enum values;
// - the generated runtime: the grpc-js service definitions (paths, streaming flags, the codecs
//   they use) and every message codec, probed field by field with hand-built wire bytes, which
//   also shows oneof membership (the embedded descriptors cannot tell oneof index 0 from unset).
import assert from "node:assert/strict";
import { test } from "node:test";

import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { admin, agent, clawkerd, egress, jobs, trust } from "@clawker/proto";

import { CONTRACT, EXTENSIONS, type FieldSpec, type FileSpec } from "./contract.fixture.js";

type FileDescriptor = typeof admin.protoMetadata.fileDescriptor;
type MessageDescriptor = FileDescriptor["messageType"][number];
type FieldDescriptor = MessageDescriptor["field"][number];

/** The generated modules, keyed by the .proto file they came from. */
const GENERATED: ReadonlyMap<string, Readonly<Record<string, unknown>>> = new Map<
  string,
  Readonly<Record<string, unknown>>
>([
  [admin.protobufFileName, admin],
  [agent.protobufFileName, agent],
  [clawkerd.protobufFileName, clawkerd],
  [jobs.protobufFileName, jobs],
  [egress.protobufFileName, egress],
  [trust.protobufFileName, trust],
]);

/** google/protobuf/descriptor.proto FieldDescriptorProto.Type numbers of scalar types. */
const SCALAR_TYPES: Readonly<Record<number, string>> = {
  1: "double",
  2: "float",
  3: "int64",
  4: "uint64",
  5: "int32",
  6: "fixed64",
  7: "fixed32",
  8: "bool",
  9: "string",
  12: "bytes",
  13: "uint32",
  15: "sfixed32",
  16: "sfixed64",
  17: "sint32",
  18: "sint64",
};
const TYPE_MESSAGE = 11;
const TYPE_ENUM = 14;
const LABEL_REPEATED = 3;

/** A field reduced to what the contract fixes (oneof membership is probed separately). */
interface FieldShape {
  number: number;
  type: string;
  kind: "scalar" | "message" | "enum" | "map";
  repeated: boolean;
}

/** A message reduced to what the contract fixes. */
interface MessageShape {
  fields: Record<string, FieldShape>;
  reserved: number[];
  reservedNames: string[];
  oneofs: string[];
}

/** A generated message codec (ts-proto MessageFns), as far as this test uses it. */
interface Codec {
  encode(message: unknown): BinaryWriter;
  decode(input: Uint8Array): Record<string, unknown>;
  create(): Record<string, unknown>;
}

/** A grpc-js method definition as ts-proto generates it. */
interface MethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (value: unknown) => Buffer;
  requestDeserialize: (value: Buffer) => unknown;
  responseSerialize: (value: unknown) => Buffer;
  responseDeserialize: (value: Buffer) => unknown;
}

/** snake_case proto name -> the lowerCamel property ts-proto generates. */
function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Asserts two records have the same keys (listing what is missing and extra), then equal values. */
function assertSameRecord<T>(what: string, want: Record<string, T>, got: Record<string, T>): void {
  const missing = Object.keys(want).filter((k) => !(k in got));
  const extra = Object.keys(got).filter((k) => !(k in want));
  assert.deepEqual(
    { missing, extra },
    { missing: [], extra: [] },
    `${what}: generated code is missing ${JSON.stringify(missing)} and has extra ${JSON.stringify(extra)}`,
  );
  for (const key of Object.keys(want)) assert.deepEqual(got[key], want[key], `${what} ${key} differs`);
}

function generatedModule(spec: FileSpec): Readonly<Record<string, unknown>> {
  const mod = GENERATED.get(spec.file);
  assert.ok(mod, `no generated module for ${spec.file}`);
  return mod;
}

function descriptorOf(spec: FileSpec): FileDescriptor {
  const metadata = generatedModule(spec)["protoMetadata"] as { fileDescriptor: FileDescriptor } | undefined;
  assert.ok(metadata, `${spec.file}: no embedded descriptor (outputSchema)`);
  return metadata.fileDescriptor;
}

function codecOf(mod: Readonly<Record<string, unknown>>, name: string): Codec {
  const codec = mod[name] as Partial<Codec> | undefined;
  assert.ok(
    typeof codec?.encode === "function" &&
      typeof codec.decode === "function" &&
      typeof codec.create === "function",
    `no generated codec for message ${name}`,
  );
  return codec as Codec;
}

/** Where a fixture type lives: its own file, or (written `package.Name`) another contract file. */
function resolveType(spec: FileSpec, type: string): { spec: FileSpec; name: string } {
  for (const other of CONTRACT) {
    const prefix = `${other.package}.`;
    if (type.startsWith(prefix)) return { spec: other, name: type.slice(prefix.length) };
  }
  return { spec, name: type };
}

/** The fixture's view of a field type's kind. */
function kindOf(spec: FileSpec, type: string): FieldShape["kind"] {
  if (type.startsWith("map<")) return "map";
  const owner = resolveType(spec, type);
  if (owner.name in owner.spec.enums) return "enum";
  if (owner.name in owner.spec.messages) return "message";
  return "scalar";
}

/** The generated codec of a fixture message type, from whichever file defines it. */
function codecOfType(spec: FileSpec, type: string): Codec {
  const owner = resolveType(spec, type);
  return codecOf(generatedModule(owner.spec), owner.name);
}

function fixtureMessage(spec: FileSpec, name: string): MessageShape {
  const message = spec.messages[name];
  assert.ok(message, `fixture has no message ${name}`);
  const fields: Record<string, FieldShape> = {};
  for (const field of message.fields) {
    fields[field.name] = {
      number: field.number,
      type: field.type,
      kind: kindOf(spec, field.type),
      repeated: field.repeated,
    };
  }
  const oneofs = [...new Set(message.fields.flatMap((f) => (f.oneof === undefined ? [] : [f.oneof])))];
  return { fields, reserved: [...message.reserved], reservedNames: [], oneofs };
}

/**
 * Strips the file's own package from a fully qualified type name (`.clawker.admin.v1.Agent`); a
 * type of another package keeps its package, without the leading dot, as the fixture writes it.
 */
function localName(spec: FileSpec, typeName: string): string {
  const prefix = `.${spec.package}.`;
  if (typeName.startsWith(prefix)) return typeName.slice(prefix.length);
  return typeName.startsWith(".") ? typeName.slice(1) : typeName;
}

function scalarName(field: FieldDescriptor | undefined): string {
  if (field === undefined) return "?";
  const type: number = field.type;
  return SCALAR_TYPES[type] ?? `type#${type}`;
}

function descriptorField(spec: FileSpec, owner: MessageDescriptor, field: FieldDescriptor): FieldShape {
  // Plain numbers: the descriptor.proto enum values are themselves part of the protobuf spec.
  const [label, kind]: [number, number] = [field.label, field.type];
  const repeated = label === LABEL_REPEATED;
  if (kind === TYPE_MESSAGE) {
    const type = localName(spec, field.typeName);
    const entry = owner.nestedType.find(
      (n) => n.options?.mapEntry === true && `${owner.name}.${n.name}` === type,
    );
    if (entry !== undefined && repeated) {
      const [key, value] = [entry.field.find((f) => f.number === 1), entry.field.find((f) => f.number === 2)];
      return {
        number: field.number,
        type: `map<${scalarName(key)},${scalarName(value)}>`,
        kind: "map",
        repeated: false,
      };
    }
    return { number: field.number, type, kind: "message", repeated };
  }
  if (kind === TYPE_ENUM) {
    return { number: field.number, type: localName(spec, field.typeName), kind: "enum", repeated };
  }
  return { number: field.number, type: scalarName(field), kind: "scalar", repeated };
}

/** Every message of a file descriptor by (dotted, for nested) name; map entry types are skipped. */
function descriptorMessages(spec: FileSpec, file: FileDescriptor): Record<string, MessageShape> {
  const out: Record<string, MessageShape> = {};
  const visit = (message: MessageDescriptor, prefix: string): void => {
    if (message.options?.mapEntry === true) return;
    const fields: Record<string, FieldShape> = {};
    for (const field of message.field) fields[field.name] = descriptorField(spec, message, field);
    out[prefix + message.name] = {
      fields,
      reserved: message.reservedRange.flatMap(({ start, end }) =>
        Array.from({ length: end - start }, (_, i) => start + i),
      ),
      reservedNames: [...message.reservedName],
      oneofs: message.oneofDecl.map((o) => o.name),
    };
    for (const nested of message.nestedType) visit(nested, `${prefix}${message.name}.`);
  };
  for (const message of file.messageType) visit(message, "");
  return out;
}

/** Every enum of a file descriptor (nested ones under dotted names): value name -> number. */
function descriptorEnums(file: FileDescriptor): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const add = (e: FileDescriptor["enumType"][number], prefix: string): void => {
    out[prefix + e.name] = Object.fromEntries(e.value.map((v) => [v.name, v.number]));
  };
  for (const e of file.enumType) add(e, "");
  const visit = (message: MessageDescriptor, prefix: string): void => {
    for (const e of message.enumType) add(e, `${prefix}${message.name}.`);
    for (const nested of message.nestedType) visit(nested, `${prefix}${message.name}.`);
  };
  for (const message of file.messageType) visit(message, "");
  return out;
}

/**
 * Writes one sample value of a scalar, enum or message type (no tag) and returns the value the
 * generated decoder must produce. Values are chosen so a retyped field decodes differently:
 * negative int32, uint32 above 2^31, int64 beyond 2^53.
 */
function writeSample(
  w: BinaryWriter,
  spec: FileSpec,
  mod: Readonly<Record<string, unknown>>,
  field: FieldSpec,
) {
  const n = field.number;
  switch (kindOf(spec, field.type)) {
    case "enum":
      w.int32(1);
      return 1;
    case "message":
      w.fork().join();
      return codecOfType(spec, field.type).create();
    default:
      break;
  }
  switch (field.type) {
    case "string":
      w.string(`value-${n}`);
      return `value-${n}`;
    case "bytes":
      w.bytes(Uint8Array.of(n, 0xff));
      return Buffer.from([n, 0xff]);
    case "bool":
      w.bool(true);
      return true;
    case "int32":
      w.int32(-1000 - n);
      return -1000 - n;
    case "uint32":
      w.uint32(0xf000_0000 + n);
      return 0xf000_0000 + n;
    case "int64": {
      const value = -(2n ** 62n) - BigInt(n);
      w.int64(value);
      return value;
    }
    case "uint64": {
      // Past 2^63, so a field generated as int64 (or as a JS number) decodes differently.
      const value = 2n ** 63n + BigInt(n);
      w.uint64(value);
      return value;
    }
    default:
      assert.fail(`fixture field ${field.name}: no sample for type ${field.type}`);
  }
}

/** The wire type a singular value of this field travels with. */
function wireTypeOf(spec: FileSpec, field: FieldSpec): WireType {
  const kind = kindOf(spec, field.type);
  if (kind === "message" || kind === "map" || field.type === "string" || field.type === "bytes") {
    return WireType.LengthDelimited;
  }
  return WireType.Varint;
}

/** Encodes one field of `field`'s message with a sample value; returns bytes and the decoded form. */
function sampleField(
  spec: FileSpec,
  mod: Readonly<Record<string, unknown>>,
  field: FieldSpec,
): { bytes: Uint8Array; property: string; value: unknown } {
  const w = new BinaryWriter();
  let value: unknown;
  if (kindOf(spec, field.type) === "map") {
    w.tag(field.number, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string("key");
    // map<string,uint64> (JobStats.memory_events) carries a varint value; the others strings.
    if (field.type === "map<string,uint64>") {
      w.tag(2, WireType.Varint).uint64(2n ** 63n + 7n);
      value = { key: 2n ** 63n + 7n };
    } else {
      w.tag(2, WireType.LengthDelimited).string("value");
      value = { key: "value" };
    }
    w.join();
  } else if (field.repeated && wireTypeOf(spec, field) === WireType.Varint) {
    // proto3 packs repeated scalars: one length-delimited run.
    w.tag(field.number, WireType.LengthDelimited).fork();
    value = [writeSample(w, spec, mod, field)];
    w.join();
  } else {
    w.tag(field.number, wireTypeOf(spec, field));
    const one = writeSample(w, spec, mod, field);
    value = field.repeated ? [one] : one;
  }
  return field.oneof === undefined
    ? { bytes: w.finish(), property: camel(field.name), value }
    : { bytes: w.finish(), property: camel(field.oneof), value: { $case: camel(field.name), value } };
}

/** A message with every non-oneof field and the first member of each oneof set, as wire bytes. */
function sampleMessage(spec: FileSpec, type: string): Buffer {
  const owner = resolveType(spec, type);
  spec = owner.spec;
  const name = owner.name;
  const mod = generatedModule(spec);
  const message = spec.messages[name];
  assert.ok(message, `fixture has no message ${name}`);
  const seenOneofs = new Set<string>();
  const parts: Uint8Array[] = [];
  for (const field of message.fields) {
    if (field.oneof !== undefined) {
      if (seenOneofs.has(field.oneof)) continue;
      seenOneofs.add(field.oneof);
    }
    parts.push(sampleField(spec, mod, field).bytes);
  }
  return Buffer.concat(parts);
}

void test("the fixture is self-consistent (unique names and numbers, known types)", () => {
  for (const spec of CONTRACT) {
    for (const [name, message] of Object.entries(spec.messages)) {
      const numbers = [...message.fields.map((f) => f.number), ...message.reserved];
      assert.equal(new Set(numbers).size, numbers.length, `${name}: duplicate field number`);
      const names = message.fields.map((f) => f.name);
      assert.equal(new Set(names).size, names.length, `${name}: duplicate field name`);
      for (const field of message.fields) {
        const known =
          kindOf(spec, field.type) !== "scalar" ||
          field.type in { string: 1, bytes: 1, bool: 1, int32: 1, uint32: 1, int64: 1, uint64: 1 };
        assert.ok(known, `${name}.${field.name}: unknown type ${field.type}`);
      }
    }
    for (const service of Object.values(spec.services)) {
      for (const method of Object.values(service)) {
        for (const type of [method.request, method.response]) {
          assert.equal(kindOf(spec, type), "message", `${method.path}: unknown message ${type}`);
        }
      }
    }
  }
});

for (const spec of CONTRACT) {
  void test(`${spec.file}: package and file name`, () => {
    const file = descriptorOf(spec);
    assert.equal(file.name, spec.file);
    assert.equal(file.package, spec.package);
    assert.equal(file.syntax, "proto3");
    assert.equal(generatedModule(spec)["protobufPackage"], spec.package);
  });

  void test(`${spec.file}: services and methods (embedded descriptor)`, () => {
    const file = descriptorOf(spec);
    const got: Record<string, Record<string, object>> = {};
    for (const service of file.service) {
      got[service.name] = Object.fromEntries(
        service.method.map((method) => [
          method.name,
          {
            path: `/${file.package}.${service.name}/${method.name}`,
            request: localName(spec, method.inputType),
            response: localName(spec, method.outputType),
            clientStreaming: method.clientStreaming,
            serverStreaming: method.serverStreaming,
          },
        ]),
      );
    }
    assertSameRecord(`${spec.package} services`, spec.services, got);
  });

  void test(`${spec.file}: grpc-js service definitions (paths, streaming, codecs)`, () => {
    const mod = generatedModule(spec);
    for (const [serviceName, methods] of Object.entries(spec.services)) {
      const definition = mod[`${serviceName}Service`] as Record<string, MethodDefinition> | undefined;
      assert.ok(definition, `no generated grpc-js definition ${serviceName}Service`);
      const byPath: Record<string, { requestStream: boolean; responseStream: boolean }> = {};
      for (const def of Object.values(definition)) {
        byPath[def.path] = { requestStream: def.requestStream, responseStream: def.responseStream };
      }
      const want = Object.fromEntries(
        Object.values(methods).map((m) => [
          m.path,
          { requestStream: m.clientStreaming, responseStream: m.serverStreaming },
        ]),
      );
      assertSameRecord(`${serviceName} definition`, want, byPath);

      // The definition's (de)serializers must be the codecs of the fixture's message types.
      for (const method of Object.values(methods)) {
        const def: MethodDefinition | undefined = Object.values(definition).find(
          (d) => d.path === method.path,
        );
        assert.ok(def, `no definition for ${method.path}`);
        const cases: Array<[string, (value: unknown) => Buffer, (value: Buffer) => unknown]> = [
          [method.request, def.requestSerialize, def.requestDeserialize],
          [method.response, def.responseSerialize, def.responseDeserialize],
        ];
        for (const [type, serialize, deserialize] of cases) {
          const bytes = sampleMessage(spec, type);
          const expected = codecOfType(spec, type).decode(bytes);
          const decoded = deserialize(bytes);
          assert.deepEqual(decoded, expected, `${method.path}: does not deserialize as ${type}`);
          assert.deepEqual(
            codecOfType(spec, type).decode(serialize(decoded)),
            expected,
            `${method.path}: does not serialize as ${type}`,
          );
        }
      }
    }
  });

  void test(`${spec.file}: messages, fields, maps, reserved numbers, oneofs (embedded descriptor)`, () => {
    const want = Object.fromEntries(
      Object.keys(spec.messages).map((name) => [name, fixtureMessage(spec, name)]),
    );
    const got = descriptorMessages(spec, descriptorOf(spec));
    assertSameRecord(
      `${spec.package} messages`,
      Object.fromEntries(Object.keys(want).map((k) => [k, true])),
      Object.fromEntries(Object.keys(got).map((k) => [k, true])),
    );
    for (const [name, message] of Object.entries(want)) {
      const actual = got[name];
      assert.ok(actual);
      assertSameRecord(`${name} fields`, message.fields, actual.fields);
      assert.deepEqual(actual.reserved, message.reserved, `${name}: reserved numbers`);
      assert.deepEqual(actual.reservedNames, message.reservedNames, `${name}: reserved names`);
      assert.deepEqual(actual.oneofs, message.oneofs, `${name}: oneofs`);
    }
  });

  void test(`${spec.file}: enums (embedded descriptor and generated TypeScript enums)`, () => {
    assertSameRecord(`${spec.package} enums`, spec.enums, descriptorEnums(descriptorOf(spec)));
    const mod = generatedModule(spec);
    for (const [name, values] of Object.entries(spec.enums)) {
      const generated = mod[name] as Record<string, unknown> | undefined;
      assert.ok(generated, `no generated enum ${name}`);
      const numeric = Object.fromEntries(
        Object.entries(generated).filter(([k, v]) => typeof v === "number" && k !== "UNRECOGNIZED"),
      );
      assertSameRecord(`enum ${name}`, values, numeric as Record<string, number>);
    }
  });

  void test(`${spec.file}: every field decodes from its number into its property, and back`, () => {
    const mod = generatedModule(spec);
    for (const [name, message] of Object.entries(spec.messages)) {
      const codec = codecOf(mod, name);
      const base = codec.create();
      const properties = [
        ...new Set(message.fields.map((f) => (f.oneof === undefined ? camel(f.name) : camel(f.oneof)))),
      ];
      assert.deepEqual(Object.keys(base).sort(), properties.sort(), `${name}: generated properties`);
      for (const field of message.fields) {
        const { bytes, property, value } = sampleField(spec, mod, field);
        const decoded = codec.decode(bytes);
        assert.deepEqual(
          decoded,
          { ...base, [property]: value },
          `${name}.${field.name}: field number ${field.number} does not decode into ${property}`,
        );
        assert.deepEqual(
          Buffer.from(codec.encode(decoded).finish()),
          Buffer.from(bytes),
          `${name}.${field.name}: re-encoding differs`,
        );
      }
      for (const number of message.reserved) {
        const bytes = new BinaryWriter().tag(number, WireType.LengthDelimited).string("reserved").finish();
        assert.deepEqual(codec.decode(bytes), base, `${name}: reserved field ${number} is in use`);
      }
    }
  });
}

void test("64-bit integers are bigint (forceLong=bigint)", () => {
  const nanos: bigint = admin.GetSystemTimeResult.create().unixNanos;
  assert.equal(typeof nanos, "bigint");
  const big = 2n ** 63n - 1n;
  const bytes = admin.GetSystemTimeResult.encode({ unixNanos: big }).finish();
  assert.equal(admin.GetSystemTimeResult.decode(bytes).unixNanos, big);
});

void test("our extensions beyond the Go contract are in the fixture and say so in their .proto comments", () => {
  for (const [file, { methods, messages, fields }] of Object.entries(EXTENSIONS)) {
    const spec = CONTRACT.find((s) => s.file === file);
    assert.ok(spec, `extension file ${file} is not in the contract`);
    const descriptor = descriptorOf(spec);
    const comments = new Map(
      (descriptor.sourceCodeInfo?.location ?? []).map((l) => [l.path.join("."), l.leadingComments]),
    );
    // descriptor.proto field numbers: FileDescriptorProto.message_type = 4, .service = 6,
    // ServiceDescriptorProto.method = 2.
    for (const method of methods) {
      const where = descriptor.service.flatMap((service, si) =>
        service.method.flatMap((m, mi) => (m.name === method ? [`6.${si}.2.${mi}`] : [])),
      );
      assert.equal(where.length, 1, `${file}: extension RPC ${method} not generated exactly once`);
      assert.ok(
        Object.values(spec.services).some((s) => method in s),
        `${file}: extension RPC ${method} missing from the fixture`,
      );
      assert.match(comments.get(where[0]!) ?? "", /EXTENSION\s+beyond the Go/, `${method}: comment`);
    }
    for (const message of messages) {
      const at = descriptor.messageType.findIndex((m) => m.name === message);
      assert.ok(at >= 0, `${file}: extension message ${message} not generated`);
      assert.ok(message in spec.messages, `${file}: extension message ${message} missing from the fixture`);
      assert.match(comments.get(`4.${at}`) ?? "", /EXTENSION\s+beyond the Go/, `${message}: comment`);
    }
    // DescriptorProto.field = 2. API.md §6: an added field takes a number from 1000 up.
    for (const [message, names] of Object.entries(fields)) {
      const at = descriptor.messageType.findIndex((m) => m.name === message);
      assert.ok(at >= 0, `${file}: message ${message} with extension fields not generated`);
      for (const name of names) {
        const fi = descriptor.messageType[at]!.field.findIndex((x) => x.name === name);
        assert.ok(fi >= 0, `${file}: extension field ${message}.${name} not generated`);
        assert.ok(
          descriptor.messageType[at]!.field[fi]!.number >= 1000,
          `${message}.${name}: number below 1000`,
        );
        assert.ok(
          spec.messages[message]?.fields.some((x) => x.name === name),
          `${file}: extension field ${message}.${name} missing from the fixture`,
        );
        const comment = comments.get(`4.${at}.2.${fi}`) ?? "";
        assert.match(comment, /EXTENSION\s+beyond the Go/, `${message}.${name}: comment`);
      }
    }
  }
});
