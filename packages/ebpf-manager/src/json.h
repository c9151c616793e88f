/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A small strict JSON parser (RFC 8259) and an append-only JSON writer. */
#ifndef CLAWKER_JSON_H
#define CLAWKER_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype type;
	bool b;
	double num;
	bool is_int; /* the literal had no fraction or exponent */
	char *str;   /* J_STR: NUL-terminated (strings with NUL are rejected) */
	size_t len;  /* J_STR length; J_ARR/J_OBJ item count */
	struct jval *items;
	char **keys; /* J_OBJ */
};

/* Parses text (len bytes) into *out. Returns 0 or -1 with a message in err. */
int json_parse(const char *text, size_t len, struct jval *out, char *err, size_t errlen);
void json_free(struct jval *v);
/* The member named key of an object, or NULL. */
const struct jval *json_get(const struct jval *obj, const char *key);

/* A growable output buffer. */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
};

void sb_reserve(struct sbuf *b, size_t more);
void sb_put(struct sbuf *b, const char *s, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string. */
void sb_json_str(struct sbuf *b, const char *s);
void sb_free(struct sbuf *b);

#endif
