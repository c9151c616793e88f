// Destination syntax: a domain (RFC 1123 labels), a `*.` wildcard domain, an IPv4 address or an
// IPv4 CIDR, reduced to one canonical spelling so equal destinations share one dedup key and one
// route identity. The choices (and why) are in README.md, "Destinations".
import { domainToASCII } from "node:url";
import { quote } from "./errors.js";
import { MAX_WILDCARD_LABELS } from "./name-match.js";
import type { DstKind } from "./rule.js";

/** A parsed destination, or what is wrong with it. */
export type DestinationResult =
  | { readonly ok: true; readonly dst: string; readonly kind: DstKind }
  | { readonly ok: false; readonly message: string };

/** RFC 1035 §2.3.4: a name is at most 253 characters in text form without the root dot. */
export const MAX_NAME_LENGTH = 253;
/** RFC 1035 §2.3.4: a label is 1 to 63 octets. */
export const MAX_LABEL_LENGTH = 63;

const LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const DIGITS = /^[0-9]+$/;
const DOTTED_NUMBERS = /^[0-9]+(?:\.[0-9]+)*(?:\/[0-9]*)?$/;
const PRINTABLE_ASCII = /^[\x21-\x7e]*$/;

function fail(message: string): DestinationResult {
  return { ok: false, message };
}

/** Parses and canonicalises a rule's `dst`. */
export function parseDestination(raw: string): DestinationResult {
  if (raw === "") return fail("is required (a domain, *.domain, IPv4 address or IPv4 CIDR)");
  if (!PRINTABLE_ASCII.test(raw)) return nonAscii(raw);
  if (raw.includes("://")) return fail(`${quote(raw)} is a URL; give the host name alone`);
  if (raw.startsWith("[") || raw.split(":").length > 2) {
    return fail(`${quote(raw)} is IPv6: the firewall is IPv4-only (native IPv6 egress is always denied)`);
  }
  if (raw.includes(":")) return fail(`${quote(raw)} includes a port; give it in the port field`);
  if (DOTTED_NUMBERS.test(raw)) return parseIpv4(raw);
  if (raw.includes("/")) return fail(`${quote(raw)}: "/" is allowed only in an IPv4 CIDR`);
  return parseName(raw);
}

function nonAscii(raw: string): DestinationResult {
  if (/[\s\p{Cc}]/u.test(raw)) return fail(`${quote(raw)} contains whitespace or control characters`);
  // Node's WHATWG IDNA conversion only to suggest the spelling; nothing is stored from it.
  const ascii = domainToASCII(raw.startsWith("*.") ? raw.slice(2) : raw);
  const hint = ascii === "" ? "" : ` (${raw.startsWith("*.") ? "*." : ""}${ascii})`;
  return fail(`${quote(raw)} is not ASCII: give an internationalised name in punycode${hint}`);
}

function parseName(raw: string): DestinationResult {
  if (raw === "." || raw === "*" || raw === "*.") return fail(`${quote(raw)} names no domain`);
  let name = raw.toLowerCase();
  // The root dot is optional in DNS; one spelling per name keeps one key per destination.
  if (name.endsWith(".") && name !== ".") name = name.slice(0, -1);
  let kind: DstKind = "domain";
  let body = name;
  if (name.startsWith("*.")) {
    kind = "wildcard";
    body = name.slice(2);
  } else if (name.startsWith(".")) {
    return fail(`${quote(raw)} starts with a dot; write a wildcard as *.${name.slice(1)}`);
  }
  if (body.includes("*"))
    return fail(`${quote(raw)}: "*" is allowed only as the whole first label (*.example.com)`);
  if (name.length > MAX_NAME_LENGTH)
    return fail(`${quote(raw)} is longer than ${MAX_NAME_LENGTH} characters`);
  const labels = body.split(".");
  for (const label of labels) {
    if (label === "") return fail(`${quote(raw)} has an empty label`);
    if (label.length > MAX_LABEL_LENGTH) {
      return fail(`${quote(raw)} has a label longer than ${MAX_LABEL_LENGTH} characters`);
    }
    if (!LABEL.test(label)) {
      return fail(
        `${quote(raw)} has an invalid label ${quote(label)} (letters, digits and inner hyphens only, RFC 1123)`,
      );
    }
  }
  if (DIGITS.test(labels[labels.length - 1]!)) {
    return fail(`${quote(raw)} is neither a domain (its last label is all digits) nor an IPv4 address`);
  }
  // `*.com` would admit a whole top-level domain; a wildcard needs a parent of two labels or more.
  if (kind === "wildcard" && labels.length < 2) {
    return fail(`${quote(raw)} is a wildcard over a single label; name at least two labels after "*."`);
  }
  // The proxy holds one lookup per parent depth and the DNS gate refuses what it cannot match, so a
  // deeper wildcard would be saved here and then refused by both layers at every reconcile.
  if (kind === "wildcard" && labels.length > MAX_WILDCARD_LABELS) {
    return fail(
      `${quote(raw)} is a wildcard over ${labels.length} labels; at most ${MAX_WILDCARD_LABELS} after "*." (write a rule for a shorter parent or for the exact name)`,
    );
  }
  return { ok: true, dst: name, kind };
}

function parseIpv4(raw: string): DestinationResult {
  const slash = raw.indexOf("/");
  const address = slash < 0 ? raw : raw.slice(0, slash);
  const parts = address.split(".");
  if (parts.length !== 4) {
    return fail(
      `${quote(raw)} is not an IPv4 address (four dotted numbers) and a domain cannot end in digits`,
    );
  }
  let value = 0;
  for (const part of parts) {
    // Leading zeros are read as octal by some resolvers (inet_aton): one address, one spelling.
    if (part.length > 1 && part.startsWith("0")) {
      return fail(`${quote(raw)} has a leading zero in ${quote(part)} (ambiguous: octal to some parsers)`);
    }
    const octet = Number(part);
    if (part === "" || octet > 255) return fail(`${quote(raw)} is not an IPv4 address (octets are 0-255)`);
    value = value * 256 + octet;
  }
  if (slash < 0) return { ok: true, dst: address, kind: "ipv4" };
  const prefixText = raw.slice(slash + 1);
  if (prefixText === "" || (prefixText.length > 1 && prefixText.startsWith("0")) || Number(prefixText) > 32) {
    return fail(`${quote(raw)} has an invalid prefix length (0-32)`);
  }
  const prefix = Number(prefixText);
  // A /32 is the address itself: one spelling, one key.
  if (prefix === 32) return { ok: true, dst: address, kind: "ipv4" };
  const size = 2 ** (32 - prefix);
  const network = value - (value % size);
  if (network !== value) {
    // Either reading is a guess: 10.0.0.1/8 may mean the network 10.0.0.0/8 or the host 10.0.0.1.
    return fail(
      `${quote(raw)} has host bits set: write the network ${formatIpv4(network)}/${prefix} or the address ${address}`,
    );
  }
  return { ok: true, dst: `${address}/${prefix}`, kind: "cidr" };
}

function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join(".");
}
