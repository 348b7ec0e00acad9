/* Model metadata <-> ModelProto.metadata_props (keys in onnx_metadata.h). Lists are JSON so that other
 * tools read them with any JSON parser (Python: json.loads(props["kiln.class_names"])); the reader is
 * strict JSON and treats the file as hostile: every malformed value is an error, never a crash. */
#include "format/onnx/onnx_metadata.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#define KEY_CLASS_NAMES "kiln.class_names"
#define KEY_INPUT_MEAN "kiln.input_mean"
#define KEY_INPUT_STD "kiln.input_std"

/* A file may carry at most this many metadata entries: each note costs the graph an array copy. */
enum { MAX_PROPS = 1024 };

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* ---- writing JSON ---- */

/* A growing string; `failed` remembers an allocation failure so writers check once at the end. */
typedef struct json_text {
    char *p;
    size_t n, cap;
    bool failed;
} json_text;

static void put(json_text *t, const char *s, size_t n) {
    if (t->failed)
        return;
    if (t->cap - t->n <= n) { /* room for the NUL too */
        size_t cap = t->cap ? t->cap : 256;
        while (cap - t->n <= n && !t->failed)
            t->failed = !kn_size_mul(cap, 2, &cap);
        char *p = t->failed ? NULL : realloc(t->p, cap);
        if (!p) {
            t->failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
}

static void put_str(json_text *t, const char *s) { put(t, s, strlen(s)); }

/* A JSON string: quotes, backslashes and control characters escaped; other bytes (UTF-8) as they are. */
static void put_json_string(json_text *t, const char *s) {
    put(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char escaped[8];
        if (c == '"' || c == '\\') {
            snprintf(escaped, sizeof escaped, "\\%c", c);
            put_str(t, escaped);
        } else if (c < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", c);
            put_str(t, escaped);
        } else {
            put(t, (const char *)&c, 1);
        }
    }
    put(t, "\"", 1);
}

/* "%.9g" gives back the same float when read with strtof. */
static kiln_status put_json_numbers(json_text *t, const float *v, int64_t n, const char *what) {
    put(t, "[", 1);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return kn_fail(KILN_ERR_INVALID_ARG, "%s[%lld] is %g; metadata numbers must be finite",
                           what, (long long)i, v[i]);
        char number[32];
        snprintf(number, sizeof number, "%s%.9g", i ? "," : "", v[i]);
        put_str(t, number);
    }
    put(t, "]", 1);
    return KILN_OK;
}

static Onnx__StringStringEntryProto *make_entry(kn_arena *arena, const char *key, const char *value) {
    Onnx__StringStringEntryProto *e = kn_arena_alloc(arena, sizeof *e);
    if (e) {
        onnx__string_string_entry_proto__init(e);
        e->key = (char *)key;
        e->value = (char *)value;
    }
    return e;
}

/* Adds the entry key = the JSON in t (copied into the arena); frees t. */
static kiln_status add_json_entry(kn_arena *arena, const char *key, json_text *t,
                                  Onnx__StringStringEntryProto **props, size_t *n_props) {
    char *value = t->failed ? NULL : kn_arena_strdup(arena, t->p);
    free(t->p);
    *t = (json_text){0};
    if (!value || !(props[*n_props] = make_entry(arena, key, value)))
        return kn_fail(KILN_ERR_NOMEM, "out of memory writing metadata '%s'", key);
    ++*n_props;
    return KILN_OK;
}

static bool is_encoded_key(const char *key) {
    return strcmp(key, KEY_CLASS_NAMES) == 0 || strcmp(key, KEY_INPUT_MEAN) == 0 ||
           strcmp(key, KEY_INPUT_STD) == 0;
}

/* Notes the importer made about the file it read (see onnx_metadata.h). */
static bool is_source_note(const char *key) {
    return strcmp(key, "onnx.opset") == 0 || strcmp(key, "onnx.producer") == 0;
}

kiln_status kn_onnx_meta_export(const kn_graph *g, bool with_norm, kn_arena *arena,
                                Onnx__StringStringEntryProto ***props, size_t *n_props) {
    *n_props = 0;
    *props = kn_arena_alloc(arena, sizeof **props * (size_t)(3 + g->n_meta));
    if (!*props)
        return kn_fail(KILN_ERR_NOMEM, "out of memory writing metadata");
    json_text t = {0};
    if (g->class_names && g->n_classes > 0) {
        put(&t, "[", 1);
        for (int i = 0; i < g->n_classes; i++) {
            if (i > 0)
                put(&t, ",", 1);
            put_json_string(&t, g->class_names[i]);
        }
        put(&t, "]", 1);
        KN_TRY(add_json_entry(arena, KEY_CLASS_NAMES, &t, *props, n_props));
    }
    if (with_norm && g->input_mean && g->input_std && g->n_norm > 0) {
        kiln_status st = put_json_numbers(&t, g->input_mean, g->n_norm, "input mean");
        if (st == KILN_OK)
            st = add_json_entry(arena, KEY_INPUT_MEAN, &t, *props, n_props);
        if (st == KILN_OK)
            st = put_json_numbers(&t, g->input_std, g->n_norm, "input std");
        if (st == KILN_OK)
            st = add_json_entry(arena, KEY_INPUT_STD, &t, *props, n_props);
        free(t.p);
        KN_TRY(st);
    } else if (g->input_mean && g->input_std && g->n_norm > 0) {
        /* The graph standardises its input itself: a reader must feed raw features, not standardise again
         * (the importer keeps this as a note; kn_data_options_for_model reads it). */
        if (!((*props)[*n_props] = make_entry(arena, "kiln.input_standardized", "in the graph")))
            return kn_fail(KILN_ERR_NOMEM, "out of memory writing metadata");
        ++*n_props;
    }
    for (int i = 0; i < g->n_meta; i++) {
        const char *key = g->meta[i].key;
        if (is_encoded_key(key))
            return kn_fail(KILN_ERR_INVALID_ARG, "metadata note '%s' uses a key kiln keeps for its own "
                           "fields", key);
        if (is_source_note(key) || strcmp(key, KN_META_INPUT_DIMS) == 0)
            continue; /* which input dims are open, ONNX says with the dims themselves */
        Onnx__StringStringEntryProto *e = make_entry(arena, key, g->meta[i].value);
        if (!e)
            return kn_fail(KILN_ERR_NOMEM, "out of memory writing metadata");
        (*props)[(*n_props)++] = e;
    }
    return KILN_OK;
}

/* ---- reading JSON ---- */

typedef struct json_reader {
    const char *s;
    size_t pos;
} json_reader;

static void skip_space(json_reader *r) {
    while (r->s[r->pos] == ' ' || r->s[r->pos] == '\t' || r->s[r->pos] == '\n' || r->s[r->pos] == '\r')
        r->pos++;
}

static bool take(json_reader *r, char c) {
    skip_space(r);
    if (r->s[r->pos] != c)
        return false;
    r->pos++;
    return true;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The 4 hex digits of a \u escape at r->pos; -1 when malformed. */
static long read_hex4(json_reader *r) {
    long code = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(r->s[r->pos]);
        if (h < 0)
            return -1;
        code = code * 16 + h;
        r->pos++;
    }
    return code;
}

/* Appends code point `code` as UTF-8; returns the byte count. */
static size_t put_utf8(unsigned char *dst, long code) {
    if (code < 0x80) {
        dst[0] = (unsigned char)code;
        return 1;
    }
    if (code < 0x800) {
        dst[0] = (unsigned char)(0xc0 | (code >> 6));
        dst[1] = (unsigned char)(0x80 | (code & 0x3f));
        return 2;
    }
    if (code < 0x10000) {
        dst[0] = (unsigned char)(0xe0 | (code >> 12));
        dst[1] = (unsigned char)(0x80 | ((code >> 6) & 0x3f));
        dst[2] = (unsigned char)(0x80 | (code & 0x3f));
        return 3;
    }
    dst[0] = (unsigned char)(0xf0 | (code >> 18));
    dst[1] = (unsigned char)(0x80 | ((code >> 12) & 0x3f));
    dst[2] = (unsigned char)(0x80 | ((code >> 6) & 0x3f));
    dst[3] = (unsigned char)(0x80 | (code & 0x3f));
    return 4;
}

/* A \u escape (after the "\u"): one code point, a surrogate pair joined. \u0000 cannot be in a C
 * string and a lone surrogate is no character: both are refused (-1). */
static long read_code_point(json_reader *r) {
    long code = read_hex4(r);
    if (code >= 0xdc00 && code <= 0xdfff)
        return -1;
    if (code >= 0xd800 && code <= 0xdbff) {
        if (r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u')
            return -1;
        r->pos += 2;
        long low = read_hex4(r);
        if (low < 0xdc00 || low > 0xdfff)
            return -1;
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
    }
    return code > 0 ? code : -1;
}

/* Reads the JSON string starting at r->pos (its opening quote) into dst (when not NULL: *len + 1
 * bytes, *len as a reading with dst NULL gave) and sets *len to its decoded length. */
static bool read_string(json_reader *r, char *dst, size_t *len) {
    if (!take(r, '"'))
        return false;
    unsigned char *out = (unsigned char *)dst;
    size_t n = 0;
    for (;;) {
        unsigned char c = (unsigned char)r->s[r->pos++];
        unsigned char bytes[4];
        size_t width = 1;
        if (c == '"')
            break;
        if (c < 0x20) /* a raw control character, or the end of the text */
            return false;
        bytes[0] = c;
        if (c == '\\') {
            char e = r->s[r->pos++];
            const char *plain = strchr("\"\\/bfnrt", e);
            if (e == 'u') {
                long code = read_code_point(r);
                if (code < 0)
                    return false;
                width = put_utf8(bytes, code);
            } else if (e && plain) {
                bytes[0] = (unsigned char)"\"\\/\b\f\n\r\t"[plain - "\"\\/bfnrt"];
            } else {
                return false;
            }
        }
        if (out)
            memcpy(out + n, bytes, width);
        n += width;
    }
    if (out)
        out[n] = '\0';
    *len = n;
    return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* A JSON number (the grammar checked here, since strtof takes more: hex, inf, nan) that is a finite
 * float. */
static bool read_number(json_reader *r, float *value) {
    skip_space(r);
    const char *start = r->s + r->pos, *p = start;
    p += *p == '-';
    if (!is_digit(*p))
        return false;
    if (*p == '0')
        p++;
    while (is_digit(*p))
        p++;
    if (*p == '.') {
        if (!is_digit(*++p))
            return false;
        while (is_digit(*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        if (!is_digit(*p))
            return false;
        while (is_digit(*p))
            p++;
    }
    char *end;
    float v = strtof(start, &end);
    if (end != p || !isfinite(v))
        return false;
    r->pos += (size_t)(p - start);
    if (value)
        *value = v;
    return true;
}

/* Parses `text`, a JSON array of strings (strings true) or numbers, and counts its items. With
 * `arena`, the items are stored too: strings (arena copies) into names[], numbers into values[]. */
static bool read_array(const char *text, bool strings, kn_arena *arena, const char **names, float *values,
                       int64_t *count) {
    json_reader r = {text, 0};
    *count = 0;
    if (!take(&r, '['))
        return false;
    bool empty = take(&r, ']');
    while (!empty) {
        bool ok;
        if (strings) {
            size_t len;
            json_reader measure = r;
            char *name = NULL;
            if (arena && (!read_string(&measure, NULL, &len) || !(name = kn_arena_alloc(arena, len + 1))))
                return false;
            ok = read_string(&r, name, &len);
            if (arena)
                names[*count] = name;
        } else {
            ok = read_number(&r, arena ? &values[*count] : NULL);
        }
        if (!ok)
            return false;
        ++*count;
        if (take(&r, ']'))
            break;
        if (!take(&r, ','))
            return false;
    }
    skip_space(&r);
    return r.s[r.pos] == '\0';
}

static kiln_status read_class_names(const char *text, kn_graph *g) {
    int64_t count;
    if (!read_array(text, true, NULL, NULL, NULL, &count) || count > INT32_MAX)
        return kn_fail(KILN_ERR_FORMAT, "metadata '%s' is not a JSON array of strings", KEY_CLASS_NAMES);
    const char **names = kn_arena_alloc(&g->arena, sizeof *names * (size_t)(count + 1));
    if (!names || !read_array(text, true, &g->arena, names, NULL, &count))
        return kn_fail(KILN_ERR_NOMEM, "out of memory reading %lld class names", (long long)count);
    g->class_names = count ? names : NULL;
    g->n_classes = (int)count;
    return KILN_OK;
}

static kiln_status read_numbers(const char *text, const char *key, kn_graph *g, float **values,
                                int64_t *count) {
    if (!read_array(text, false, NULL, NULL, NULL, count))
        return kn_fail(KILN_ERR_FORMAT, "metadata '%s' is not a JSON array of finite numbers", key);
    *values = kn_arena_alloc(&g->arena, sizeof **values * (size_t)(*count + 1));
    if (!*values || !read_array(text, false, &g->arena, NULL, *values, count))
        return kn_fail(KILN_ERR_NOMEM, "out of memory reading metadata '%s'", key);
    return KILN_OK;
}

kiln_status kn_onnx_meta_import(const Onnx__ModelProto *m, kn_graph *g) {
    if (m->n_metadata_props > MAX_PROPS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%zu metadata entries; at most %d supported",
                       m->n_metadata_props, MAX_PROPS);
    const char *mean_text = NULL, *std_text = NULL;
    for (size_t i = 0; i < m->n_metadata_props; i++) {
        const char *key = str_or_empty(m->metadata_props[i]->key);
        const char *value = str_or_empty(m->metadata_props[i]->value);
        if (strcmp(key, KEY_CLASS_NAMES) == 0)
            KN_TRY(read_class_names(value, g));
        else if (strcmp(key, KEY_INPUT_MEAN) == 0)
            mean_text = value;
        else if (strcmp(key, KEY_INPUT_STD) == 0)
            std_text = value;
        else if (*key)
            KN_TRY(kn_graph_set_meta(g, key, value));
    }
    if (!mean_text && !std_text)
        return KILN_OK;
    if (!mean_text || !std_text) {
        const char *given = mean_text ? KEY_INPUT_MEAN : KEY_INPUT_STD;
        const char *missing = mean_text ? KEY_INPUT_STD : KEY_INPUT_MEAN;
        return kn_fail(KILN_ERR_FORMAT, "metadata has '%s' without '%s'", given, missing);
    }
    float *mean, *std;
    int64_t n_mean, n_std;
    KN_TRY(read_numbers(mean_text, KEY_INPUT_MEAN, g, &mean, &n_mean));
    KN_TRY(read_numbers(std_text, KEY_INPUT_STD, g, &std, &n_std));
    if (n_mean != n_std || n_mean == 0)
        return kn_fail(KILN_ERR_FORMAT, "metadata '%s' has %lld numbers and '%s' %lld; they must match "
                       "and not be empty", KEY_INPUT_MEAN, (long long)n_mean, KEY_INPUT_STD,
                       (long long)n_std);
    g->input_mean = mean;
    g->input_std = std;
    g->n_norm = n_mean;
    return KILN_OK;
}
