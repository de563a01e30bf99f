// zone-maintenance scheduler plugin (C, `wit-bindgen c` + clang).
//
// Behaviour: see ../README.md. Conventions of the generated bindings
// (scheduler_plugin.h, generated at build time):
// - every argument is owned by the callee: free it with its `*_free` function;
// - returned strings and lists are freed by the bindings after the call
//   (post-return), so they must be heap-allocated, never string literals;
// - `result<T, E>` is `bool f(args, T *ret, E *err)`: return false and fill
//   `err` for an error; a variant is `{ uint8_t tag; union val; }`;
// - a list is `{ T *ptr; size_t len; }` and flags are a bit mask.

#include <stdlib.h>
#include <string.h>

#include "scheduler_plugin.h"

typedef scheduler_plugin_string_t string_t;
typedef exports_trellis_plugin_scheduler_plugin_error_t plugin_error_t;
typedef exports_trellis_plugin_scheduler_node_id_t node_id_t;

#define MAINTENANCE_REASON "node(s) under maintenance"
#define ZONE_LABEL "topology.kubernetes.io/zone"
#define NO_RANK (-1)

// --- state -------------------------------------------------------------------

// The configured preferred zones: decoded strings, all in one allocation.
static char *zone_text;
static string_t *zones;
static size_t zone_count;

// What the plugin remembers of a node, indexed by node id (ids are dense).
typedef struct {
    bool present;
    bool maintenance;
    int32_t rank; // index into `zones`, or NO_RANK
} node_state_t;

static node_state_t *nodes;
static size_t node_cap;

// --- helpers -----------------------------------------------------------------

// Allocation failure traps (as in the Rust version) instead of writing through
// NULL, which is a valid address in linear memory.
static void *xrealloc(void *ptr, size_t size) {
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) abort();
    return p;
}

static bool str_eq(const string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

static bool set_error(plugin_error_t *err, uint8_t tag, const char *msg) {
    err->tag = tag;
    // Every variant case carries a string at the same place in the union.
    scheduler_plugin_string_dup(&err->val.invalid_config, msg);
    return false;
}

static bool unknown_node(plugin_error_t *err, node_id_t id) {
    char msg[32] = "unknown node id ";
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + id % 10);
        id /= 10;
    } while (id != 0);
    size_t len = strlen(msg);
    while (n > 0) msg[len++] = digits[--n];
    msg[len] = '\0';
    return set_error(err, TRELLIS_PLUGIN_TYPES_PLUGIN_ERROR_INVALID_INPUT, msg);
}

static const node_state_t *lookup(node_id_t id) {
    return id < node_cap && nodes[id].present ? &nodes[id] : NULL;
}

// --- configuration: a minimal JSON reader --------------------------------------
//
// Accepts exactly `{}` or `{"preferredZones": [ "string", ... ]}` with any JSON
// whitespace and escapes; anything else (including a duplicate key) is refused.

typedef struct {
    const uint8_t *p, *end;
    char *out; // where decoded strings go
} reader_t;

static void skip_ws(reader_t *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool eat(reader_t *r, char c) {
    skip_ws(r);
    if (r->p < r->end && *r->p == (uint8_t)c) {
        r->p++;
        return true;
    }
    return false;
}

static int hex4(reader_t *r) {
    if (r->end - r->p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = *r->p++;
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static void put_utf8(reader_t *r, uint32_t cp) {
    if (cp < 0x80) {
        *r->out++ = (char)cp;
    } else if (cp < 0x800) {
        *r->out++ = (char)(0xC0 | cp >> 6);
        *r->out++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *r->out++ = (char)(0xE0 | cp >> 12);
        *r->out++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *r->out++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *r->out++ = (char)(0xF0 | cp >> 18);
        *r->out++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *r->out++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *r->out++ = (char)(0x80 | (cp & 0x3F));
    }
}

// Read a JSON string, decoding it to r->out. The decoded text is never longer
// than its JSON form, so r->out (sized like the input) cannot overflow.
static bool read_string(reader_t *r, string_t *s) {
    if (!eat(r, '"')) return false;
    s->ptr = (uint8_t *)r->out;
    while (r->p < r->end) {
        uint8_t c = *r->p++;
        if (c == '"') {
            s->len = (size_t)((uint8_t *)r->out - s->ptr);
            return true;
        }
        if (c < 0x20) return false; // control characters must be escaped
        if (c != '\\') {
            *r->out++ = (char)c; // the input is valid UTF-8: copy bytes as-is
            continue;
        }
        if (r->p == r->end) return false;
        switch (*r->p++) {
        case '"': *r->out++ = '"'; break;
        case '\\': *r->out++ = '\\'; break;
        case '/': *r->out++ = '/'; break;
        case 'b': *r->out++ = '\b'; break;
        case 'f': *r->out++ = '\f'; break;
        case 'n': *r->out++ = '\n'; break;
        case 'r': *r->out++ = '\r'; break;
        case 't': *r->out++ = '\t'; break;
        case 'u': {
            int cp = hex4(r);
            if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return false; // lone low surrogate
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                // A high surrogate must be followed by an escaped low one.
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') return false;
                r->p += 2;
                int lo = hex4(r);
                if (lo < 0xDC00 || lo > 0xDFFF) return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(r, (uint32_t)cp);
            break;
        }
        default: return false;
        }
    }
    return false;
}

// Parse `text` into `*list` (strings pointing into `*buf`). Returns NULL on
// success or a message for invalid-config.
static const char *parse_config(const string_t *text, char **buf, string_t **list, size_t *count) {
    *buf = xrealloc(NULL, text->len);
    *list = NULL;
    *count = 0;
    reader_t r = {text->ptr, text->ptr + text->len, *buf};
    if (!eat(&r, '{')) return "config must be a JSON object";
    if (!eat(&r, '}')) {
        string_t key;
        if (!read_string(&r, &key)) return "config is not valid JSON";
        if (!str_eq(&key, "preferredZones")) return "unknown field, expected `preferredZones`";
        r.out = *buf; // the key's decoded text is no longer needed
        if (!eat(&r, ':')) return "config is not valid JSON";
        if (!eat(&r, '[')) return "`preferredZones` must be a list of strings";
        if (!eat(&r, ']')) {
            size_t cap = 0;
            do {
                if (*count == cap) {
                    cap = cap ? cap * 2 : 4;
                    *list = xrealloc(*list, cap * sizeof(string_t));
                }
                if (!read_string(&r, &(*list)[*count])) return "`preferredZones` must be a list of strings";
                (*count)++;
            } while (eat(&r, ','));
            if (!eat(&r, ']')) return "`preferredZones` must be a list of strings";
        }
        // A second field is either unknown or a duplicate `preferredZones`.
        if (!eat(&r, '}')) return "config must have only the field `preferredZones`";
    }
    skip_ws(&r);
    if (r.p != r.end) return "config is not valid JSON: trailing characters";
    return NULL;
}

// --- the exported interface -----------------------------------------------------

void exports_trellis_plugin_scheduler_info(exports_trellis_plugin_scheduler_plugin_info_t *ret) {
    scheduler_plugin_string_dup(&ret->name, "ZoneMaintenance");
    scheduler_plugin_string_dup(&ret->version, "0.4.0");
    ret->phases = EXPORTS_TRELLIS_PLUGIN_SCHEDULER_PHASES_FILTER | EXPORTS_TRELLIS_PLUGIN_SCHEDULER_PHASES_SCORE;
    // Verdicts and scores depend on nodes only: the host sends no pods, and
    // `prepare` no part of the pod being scheduled.
    ret->tracks_pods = false;
    ret->pod_fields = 0;
    // Of a node it reads the labels only.
    ret->node_fields = EXPORTS_TRELLIS_PLUGIN_SCHEDULER_NODE_FIELDS_LABELS;
}

bool exports_trellis_plugin_scheduler_configure(string_t *config, plugin_error_t *err) {
    char *buf;
    string_t *list;
    size_t count;
    const char *problem = parse_config(config, &buf, &list, &count);
    scheduler_plugin_string_free(config);
    if (problem != NULL) {
        free(buf);
        free(list);
        return set_error(err, TRELLIS_PLUGIN_TYPES_PLUGIN_ERROR_INVALID_CONFIG, problem);
    }
    free(zone_text);
    free(zones);
    zone_text = buf;
    zones = list;
    zone_count = count;
    return true;
}

bool exports_trellis_plugin_scheduler_upsert_node(node_id_t id, exports_trellis_plugin_scheduler_node_t *node,
                                                   plugin_error_t *err) {
    if (id >= node_cap) {
        // Grow geometrically; 64-bit arithmetic because size_t is 32 bits here.
        uint64_t cap = node_cap ? 2 * (uint64_t)node_cap : 16;
        if (cap <= id) cap = (uint64_t)id + 1;
        uint64_t bytes = cap * sizeof(node_state_t);
        node_state_t *grown = bytes <= SIZE_MAX ? realloc(nodes, (size_t)bytes) : NULL;
        if (grown == NULL) {
            exports_trellis_plugin_scheduler_node_free(node);
            return set_error(err, TRELLIS_PLUGIN_TYPES_PLUGIN_ERROR_INTERNAL, "out of memory");
        }
        memset(grown + node_cap, 0, (cap - node_cap) * sizeof(node_state_t));
        nodes = grown;
        node_cap = cap;
    }
    node_state_t st = {.present = true, .maintenance = false, .rank = NO_RANK};
    // As the Rust SDK's `label_value`, the first label with a key counts.
    const string_t *maintenance = NULL, *zone = NULL;
    // `labels` is none for a node without labels.
    size_t label_count = node->labels.is_some ? node->labels.val.len : 0;
    for (size_t i = 0; i < label_count; i++) {
        const exports_trellis_plugin_scheduler_label_t *l = &node->labels.val.ptr[i];
        if (maintenance == NULL && str_eq(&l->key, "maintenance")) maintenance = &l->value;
        if (zone == NULL && str_eq(&l->key, ZONE_LABEL)) zone = &l->value;
    }
    st.maintenance = maintenance != NULL && str_eq(maintenance, "true");
    for (size_t i = 0; zone != NULL && i < zone_count; i++) {
        if (zones[i].len == zone->len && memcmp(zones[i].ptr, zone->ptr, zone->len) == 0) {
            st.rank = (int32_t)i; // first match
            break;
        }
    }
    nodes[id] = st;
    exports_trellis_plugin_scheduler_node_free(node);
    return true;
}

void exports_trellis_plugin_scheduler_remove_node(node_id_t id) {
    if (id < node_cap) nodes[id].present = false;
}

// Never called (the plugin tracks no pods), but part of the interface.
bool exports_trellis_plugin_scheduler_assume_pod(node_id_t node, exports_trellis_plugin_scheduler_placed_pod_t *pod,
                                                  plugin_error_t *err) {
    (void)node;
    (void)err;
    exports_trellis_plugin_scheduler_placed_pod_free(pod);
    return true;
}

void exports_trellis_plugin_scheduler_forget_pod(node_id_t node, string_t *uid) {
    (void)node;
    scheduler_plugin_string_free(uid);
}

// The pod does not change the answers: both phases apply to every pod.
bool exports_trellis_plugin_scheduler_prepare(exports_trellis_plugin_scheduler_pod_t *p,
                                               exports_trellis_plugin_scheduler_phases_t *ret,
                                               plugin_error_t *err) {
    (void)err;
    exports_trellis_plugin_scheduler_pod_free(p);
    *ret = EXPORTS_TRELLIS_PLUGIN_SCHEDULER_PHASES_FILTER | EXPORTS_TRELLIS_PLUGIN_SCHEDULER_PHASES_SCORE;
    return true;
}

bool exports_trellis_plugin_scheduler_filter(exports_trellis_plugin_scheduler_list_node_id_t *candidates,
                                              uint32_t max_feasible,
                                              exports_trellis_plugin_scheduler_filter_result_t *ret,
                                              plugin_error_t *err) {
    size_t n = candidates->len;
    // Worst-case sizes; the bindings free these lists after the call.
    node_id_t *feasible = xrealloc(NULL, n * sizeof(node_id_t));
    node_id_t *rejected = xrealloc(NULL, n * sizeof(node_id_t));
    size_t nf = 0, nr = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        node_id_t id = candidates->ptr[i];
        const node_state_t *st = lookup(id);
        if (st == NULL) {
            ok = unknown_node(err, id);
            break;
        }
        if (st->maintenance) {
            rejected[nr++] = id;
        } else {
            feasible[nf++] = id;
            if (max_feasible > 0 && nf == max_feasible) break;
        }
    }
    exports_trellis_plugin_scheduler_list_node_id_free(candidates);
    if (!ok) {
        free(feasible);
        free(rejected);
        return false;
    }
    // The bindings free a returned list only when it is non-empty.
    if (nf == 0) {
        free(feasible);
        feasible = NULL;
    }
    if (nr == 0) {
        free(rejected);
        rejected = NULL;
    }
    ret->feasible = (exports_trellis_plugin_scheduler_list_node_id_t){feasible, nf};
    ret->rejected = (exports_trellis_plugin_scheduler_list_node_id_t){rejected, nr};
    // Every refused node's reason is this plugin's only one, index 0.
    uint8_t *why = NULL;
    if (nr > 0) {
        why = xrealloc(NULL, nr);
        memset(why, 0, nr);
    }
    ret->rejected_reasons = (scheduler_plugin_list_u8_t){why, nr};
    // The only reason this plugin gives: present once if any node was rejected.
    ret->reasons = (exports_trellis_plugin_scheduler_list_reason_t){NULL, 0};
    if (nr > 0) {
        exports_trellis_plugin_scheduler_reason_t *reason = xrealloc(NULL, sizeof(*reason));
        scheduler_plugin_string_dup(&reason->message, MAINTENANCE_REASON);
        reason->unresolvable = true;
        ret->reasons = (exports_trellis_plugin_scheduler_list_reason_t){reason, 1};
    }
    return true;
}

bool exports_trellis_plugin_scheduler_score(exports_trellis_plugin_scheduler_list_node_id_t *candidates,
                                             scheduler_plugin_list_u8_t *ret, plugin_error_t *err) {
    size_t n = candidates->len;
    uint8_t *scores = n ? xrealloc(NULL, n) : NULL;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const node_state_t *st = lookup(candidates->ptr[i]);
        if (st == NULL) {
            ok = unknown_node(err, candidates->ptr[i]);
            break;
        }
        scores[i] = st->rank == NO_RANK ? 0 : (uint8_t)(100 - ((size_t)st->rank * 100) / zone_count);
    }
    exports_trellis_plugin_scheduler_list_node_id_free(candidates);
    if (!ok) {
        free(scores);
        return false;
    }
    *ret = (scheduler_plugin_list_u8_t){scores, n};
    return true;
}
