// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Strict JSON: no trailing commas, no comments, depth-limited, duplicate keys rejected. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"

#define MAX_DEPTH 32

struct parser {
	const char *s;
	size_t len;
	size_t pos;
	char *err;
	size_t errlen;
};

static int fail(struct parser *p, const char *msg)
{
	snprintf(p->err, p->errlen, "%s at offset %zu", msg, p->pos);
	return -1;
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		p->pos++;
	}
}

static int parse_value(struct parser *p, struct jval *v, int depth);

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int put_utf8(struct sbuf *b, unsigned cp)
{
	char t[4];
	size_t n;

	if (cp < 0x80) {
		t[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		t[0] = (char)(0xc0 | (cp >> 6));
		t[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		t[0] = (char)(0xe0 | (cp >> 12));
		t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		t[0] = (char)(0xf0 | (cp >> 18));
		t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		t[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		t[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	sb_put(b, t, n);
	return 0;
}

static int parse_hex4(struct parser *p, unsigned *out)
{
	unsigned v = 0;

	if (p->pos + 4 > p->len)
		return fail(p, "truncated \\u escape");
	for (int i = 0; i < 4; i++) {
		int h = hexval(p->s[p->pos + i]);
		if (h < 0)
			return fail(p, "bad \\u escape");
		v = v << 4 | (unsigned)h;
	}
	p->pos += 4;
	*out = v;
	return 0;
}

static int parse_string(struct parser *p, char **out, size_t *outlen)
{
	struct sbuf b = {};

	p->pos++; /* opening quote */
	for (;;) {
		if (p->pos >= p->len) {
			sb_free(&b);
			return fail(p, "unterminated string");
		}
		unsigned char c = (unsigned char)p->s[p->pos++];
		if (c == '"')
			break;
		if (c < 0x20) {
			sb_free(&b);
			return fail(p, "control character in string");
		}
		if (c != '\\') {
			sb_put(&b, (const char *)&c, 1);
			continue;
		}
		if (p->pos >= p->len) {
			sb_free(&b);
			return fail(p, "truncated escape");
		}
		char e = p->s[p->pos++];
		unsigned cp;
		switch (e) {
		case '"': sb_put(&b, "\"", 1); break;
		case '\\': sb_put(&b, "\\", 1); break;
		case '/': sb_put(&b, "/", 1); break;
		case 'b': sb_put(&b, "\b", 1); break;
		case 'f': sb_put(&b, "\f", 1); break;
		case 'n': sb_put(&b, "\n", 1); break;
		case 'r': sb_put(&b, "\r", 1); break;
		case 't': sb_put(&b, "\t", 1); break;
		case 'u':
			if (parse_hex4(p, &cp)) {
				sb_free(&b);
				return -1;
			}
			if (cp >= 0xd800 && cp < 0xdc00) {
				unsigned lo;
				if (p->pos + 2 > p->len || p->s[p->pos] != '\\' ||
				    p->s[p->pos + 1] != 'u') {
					sb_free(&b);
					return fail(p, "lone surrogate");
				}
				p->pos += 2;
				if (parse_hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
					sb_free(&b);
					return fail(p, "bad surrogate pair");
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				sb_free(&b);
				return fail(p, "lone surrogate");
			}
			if (cp == 0) {
				sb_free(&b);
				return fail(p, "NUL in string");
			}
			put_utf8(&b, cp);
			break;
		default:
			sb_free(&b);
			return fail(p, "bad escape");
		}
	}
	sb_put(&b, "", 1);
	*out = b.p;
	*outlen = b.len - 1;
	return 0;
}

static int parse_number(struct parser *p, struct jval *v)
{
	size_t start = p->pos;
	bool is_int = true;

	if (p->s[p->pos] == '-')
		p->pos++;
	if (p->pos >= p->len)
		return fail(p, "bad number");
	if (p->s[p->pos] == '0') {
		p->pos++;
	} else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9') {
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	} else {
		return fail(p, "bad number");
	}
	if (p->pos < p->len && p->s[p->pos] == '.') {
		is_int = false;
		p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return fail(p, "bad number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
		is_int = false;
		p->pos++;
		if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
			p->pos++;
		if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9')
			return fail(p, "bad number");
		while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	char tmp[64];
	size_t n = p->pos - start;
	if (n >= sizeof(tmp))
		return fail(p, "number too long");
	memcpy(tmp, p->s + start, n);
	tmp[n] = 0;
	v->type = J_NUM;
	v->num = strtod(tmp, NULL);
	v->is_int = is_int && fabs(v->num) <= 9007199254740991.0;
	if (!isfinite(v->num))
		return fail(p, "number out of range");
	return 0;
}

static int parse_literal(struct parser *p, const char *lit)
{
	size_t n = strlen(lit);

	if (p->pos + n > p->len || memcmp(p->s + p->pos, lit, n) != 0)
		return fail(p, "unexpected token");
	p->pos += n;
	return 0;
}

static int push(struct jval **items, char ***keys, size_t *n, size_t *cap, bool with_keys)
{
	if (*n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 4;
	struct jval *ni = realloc(*items, nc * sizeof(**items));
	if (!ni)
		return -1;
	*items = ni;
	if (with_keys) {
		char **nk = realloc(*keys, nc * sizeof(**keys));
		if (!nk)
			return -1;
		*keys = nk;
	}
	*cap = nc;
	return 0;
}

static int parse_value(struct parser *p, struct jval *v, int depth)
{
	memset(v, 0, sizeof(*v));
	if (depth > MAX_DEPTH)
		return fail(p, "nested too deeply");
	skip_ws(p);
	if (p->pos >= p->len)
		return fail(p, "unexpected end");
	char c = p->s[p->pos];
	size_t cap = 0;

	switch (c) {
	case '{':
		v->type = J_OBJ;
		p->pos++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == '}') {
			p->pos++;
			return 0;
		}
		for (;;) {
			skip_ws(p);
			if (p->pos >= p->len || p->s[p->pos] != '"')
				return fail(p, "expected key");
			char *key;
			size_t klen;
			if (parse_string(p, &key, &klen))
				return -1;
			for (size_t i = 0; i < v->len; i++) {
				if (strcmp(v->keys[i], key) == 0) {
					free(key);
					return fail(p, "duplicate key");
				}
			}
			if (push(&v->items, &v->keys, &v->len, &cap, true)) {
				free(key);
				return fail(p, "out of memory");
			}
			v->keys[v->len] = key;
			skip_ws(p);
			if (p->pos >= p->len || p->s[p->pos] != ':') {
				v->items[v->len++].type = J_NULL;
				return fail(p, "expected ':'");
			}
			p->pos++;
			if (parse_value(p, &v->items[v->len++], depth + 1))
				return -1;
			skip_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (p->pos < p->len && p->s[p->pos] == '}') {
				p->pos++;
				return 0;
			}
			return fail(p, "expected ',' or '}'");
		}
	case '[':
		v->type = J_ARR;
		p->pos++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ']') {
			p->pos++;
			return 0;
		}
		for (;;) {
			if (push(&v->items, NULL, &v->len, &cap, false))
				return fail(p, "out of memory");
			if (parse_value(p, &v->items[v->len++], depth + 1))
				return -1;
			skip_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (p->pos < p->len && p->s[p->pos] == ']') {
				p->pos++;
				return 0;
			}
			return fail(p, "expected ',' or ']'");
		}
	case '"':
		v->type = J_STR;
		return parse_string(p, &v->str, &v->len);
	case 't':
		v->type = J_BOOL;
		v->b = true;
		return parse_literal(p, "true");
	case 'f':
		v->type = J_BOOL;
		return parse_literal(p, "false");
	case 'n':
		v->type = J_NULL;
		return parse_literal(p, "null");
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return parse_number(p, v);
		return fail(p, "unexpected character");
	}
}

int json_parse(const char *text, size_t len, struct jval *out, char *err, size_t errlen)
{
	struct parser p = { .s = text, .len = len, .err = err, .errlen = errlen };

	if (parse_value(&p, out, 0)) {
		json_free(out);
		return -1;
	}
	skip_ws(&p);
	if (p.pos != p.len) {
		json_free(out);
		return fail(&p, "trailing data");
	}
	return 0;
}

void json_free(struct jval *v)
{
	if (!v)
		return;
	if (v->type == J_ARR || v->type == J_OBJ) {
		for (size_t i = 0; i < v->len; i++) {
			json_free(&v->items[i]);
			if (v->type == J_OBJ)
				free(v->keys[i]);
		}
		free(v->items);
		free(v->keys);
	}
	free(v->str);
	memset(v, 0, sizeof(*v));
}

const struct jval *json_get(const struct jval *obj, const char *key)
{
	if (!obj || obj->type != J_OBJ)
		return NULL;
	for (size_t i = 0; i < obj->len; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return &obj->items[i];
	return NULL;
}

void sb_reserve(struct sbuf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	size_t nc = b->cap ? b->cap : 256;
	while (nc < b->len + more)
		nc *= 2;
	char *np = realloc(b->p, nc);
	if (!np)
		abort(); /* out of memory: the manager cannot continue safely */
	b->p = np;
	b->cap = nc;
}

void sb_put(struct sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void sb_puts(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sb_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at c (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *c)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (*c >= 0xc2 && *c <= 0xdf)
		n = 2;
	else if (*c >= 0xe0 && *c <= 0xef)
		n = 3;
	else if (*c >= 0xf0 && *c <= 0xf4)
		n = 4;
	else
		return 0;
	if (*c == 0xe0)
		lo = 0xa0;
	else if (*c == 0xed)
		hi = 0x9f;
	else if (*c == 0xf0)
		lo = 0x90;
	else if (*c == 0xf4)
		hi = 0x8f;
	if (c[1] < lo || c[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (c[i] < 0x80 || c[i] > 0xbf)
			return 0;
	return n;
}

void sb_json_str(struct sbuf *b, const char *s)
{
	sb_put(b, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c;) {
		size_t n;

		switch (*c) {
		case '"': sb_put(b, "\\\"", 2); break;
		case '\\': sb_put(b, "\\\\", 2); break;
		case '\n': sb_put(b, "\\n", 2); break;
		case '\r': sb_put(b, "\\r", 2); break;
		case '\t': sb_put(b, "\\t", 2); break;
		default:
			if (*c < 0x20) {
				sb_printf(b, "\\u%04x", *c);
			} else if (*c < 0x80) {
				sb_put(b, (const char *)c, 1);
			} else if ((n = utf8_len(c))) {
				sb_put(b, (const char *)c, n);
				c += n;
				continue;
			} else {
				/* JSON text is UTF-8 (RFC 8259 8.1): a stray byte becomes U+FFFD */
				sb_puts(b, "\\ufffd");
			}
		}
		c++;
	}
	sb_put(b, "\"", 1);
}

void sb_free(struct sbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
