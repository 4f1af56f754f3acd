/* PBX log scanning in C: LogFormat.scan()'s result for a chunk of log bytes, without the
 * per-line Python. Profiled, an attack-heavy Asterisk log cost ~7 us per failure line in
 * scan(): the regex ~1 us, the rest twenty-odd small calls (slicing, partition, dict gets,
 * the From header's user part, the stamp cache...).
 *
 * What stays in Python: the rules (base.py and the per-PBX modules) and every line this
 * cannot read with certainty. A Rule may carry a template (Rule.fast): the regex's common
 * shape as literals and typed fields, read here left to right. A line is read here only
 * when it is printable ASCII and the template matches with every literal where the regex
 * has to find it (a literal marked "unique" must occur exactly once in the line, "last" is
 * the last occurrence, "first" the next one); then the regex, which tries the same places,
 * gives the same groups. Anything else (no template, control or non-ASCII bytes, a field
 * that does not fit its class, a second candidate for the address, a reason outside the
 * table, an address that does not parse) is handed to LogFormat._parse_from() with the
 * line decoded as Python would: deferring is always correct, only slower.
 * tests/detect/test_clog.py holds the two equal on the fail2ban and Kamailio corpora, the
 * benchmark's lines and fuzzed lines built to break templates, and runs it under ASan and
 * UBSan. Attacker bytes: every index stays within the line; nothing is copied into a
 * fixed-size buffer. Built by the build backend (pyproject.toml's ext-modules), optional. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
/* SSE2 (every x86-64) for the whole-buffer passes and the line check; the scalar code
 * runs elsewhere, and with -DCLOG_NO_SIMD, which the tests build too. */
#if defined(__SSE2__) && !defined(CLOG_NO_SIMD)
#define CLOG_SSE2 1
#include <emmintrin.h>
#endif

enum { OP_LIT = 1, OP_FIELD, OP_END, OP_OPT, OP_ONEOF };
enum { AT_FIRST, AT_UNIQUE, AT_LAST };
enum { G_REASON, G_HOSTPORT, G_ADDR, G_PORT, G_PROTO, G_ACCOUNT, NGROUPS };
enum {
    C_ANY, C_HOSTPORT, C_PROTO_HOSTPORT, C_WORD, C_DIGITS, C_NOQUOTE, C_NODASH,
    C_NOSLASHDQ, C_46, C_CONTEXT_TAIL, C_OPTMETHOD, C_ADDR, C_UPPER, C_NOQUOTE0, C_ADDRB,
    C_NOSPACE, C_EMPTY, NCLASSES
};
/* Names as Python writes them (base.py: Lit/Field/End/Opt); index = the enum value. */
static const char *const GROUP_NAMES[NGROUPS] = {
    "reason", "hostport", "addr", "port", "proto", "account",
};
static const char *const CLASS_NAMES[NCLASSES] = {
    "any", "hostport", "proto_hostport", "word", "digits", "noquote", "nodash",
    "noslashdq", "4or6", "context_tail", "optmethod", "addr", "upper", "noquote0", "addrb",
    "nospace", "empty",
};
static const char *const MODE_NAMES[] = {"first", "unique", "last"};

typedef struct {
    int op, mode, cls, group;
    const char *lit; /* borrowed from the Scanner's spec tuple */
    Py_ssize_t litlen;
    char close;        /* OP_OPT: the byte that ends the value */
    PyObject *options; /* OP_ONEOF: a tuple of bytes, borrowed */
} Step;

typedef struct {
    const char *marker;
    Py_ssize_t mlen;
    Step *steps;
    int nsteps; /* 0: no template, every line holding the marker is deferred */
    PyObject *outcomes, *only, *dflt; /* borrowed from the spec */
    PyObject *unanswered; /* Py_None, or the outcome when our challenge was not answered */
    const char *repeat;               /* "" when the rule has no candidates check */
    Py_ssize_t rlen;
    int tcp_verifies, account_in_uri, has_reason, has_proto;
    int nreasons; /* outcomes as an array: a reason is found by memcmp, no str made */
    struct Reason {
        const char *text;
        Py_ssize_t len;
        PyObject *key, *outcome; /* borrowed from outcomes */
    } *reasons;
} Rule;

/* What one scan() call remembers between lines: the last stamp head and host read, and
 * what they gave (a flood repeats both on consecutive lines). stamp(line, ctx) depends
 * only on the line's first 21 characters (every stamp it reads fits), address() only on
 * the text. */
typedef struct {
    PyObject *stamps, *minutes, *ctx;
    char head[21];
    Py_ssize_t head_len;
    PyObject *when; /* NULL: none yet */
    char host[64];
    Py_ssize_t host_len;
    PyObject *src;
} Memo;

typedef struct {
    const char *text;
    Py_ssize_t len;
    int first;
} Marker;

typedef struct {
    PyObject_HEAD
    PyObject *spec; /* the constructor's arguments: keeps every borrowed pointer alive */
    Rule *rules;
    int nrules;
    Marker *markers;
    int nmarkers;
    int shift;
    PyObject *origin, *event_type, *address, *addr_cache, *stamp, *parse_from;
    PyObject *seconds; /* base._SECONDS: timedelta(seconds=i) for i in 0..59 */
    Py_ssize_t stamps_max;
    long deferred; /* lines handed to Python (tests read it: the fast path must be taken) */
} Scanner;

/* -- byte classes (the ASCII meaning of the regex's classes: lines here are ASCII) ------ */
static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static int is_addr(unsigned char c) { return is_hex(c) || c == ':' || c == '.'; }
static int is_addrb(unsigned char c) { return is_addr(c) || c == '[' || c == ']'; }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static int is_word(unsigned char c)
{
    return is_digit(c) || is_upper(c) || (c >= 'a' && c <= 'z') || c == '_';
}

static int all_of(const char *p, Py_ssize_t n, int (*ok)(unsigned char), Py_ssize_t min)
{
    if (n < min)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!ok((unsigned char)p[i]))
            return 0;
    return 1;
}

static int none_of(const char *p, Py_ssize_t n, const char *bad, Py_ssize_t min)
{
    if (n < min)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (strchr(bad, p[i]) != NULL)
            return 0;
    return 1;
}

/* \[[0-9a-fA-F:.]+\](?::\d+)?|[0-9a-fA-F:.]+ , the whole of [p, p+n). */
static int is_hostport(const char *p, Py_ssize_t n)
{
    if (n > 0 && p[0] == '[') {
        Py_ssize_t i = 1;
        while (i < n && is_addr((unsigned char)p[i]))
            i++;
        if (i == 1 || i >= n || p[i] != ']')
            return 0;
        i++;
        if (i == n)
            return 1;
        return p[i] == ':' && all_of(p + i + 1, n - i - 1, is_digit, 1);
    }
    return all_of(p, n, is_addr, 1);
}

/* -- finding literals ------------------------------------------------------------------ */
/* In a line: memchr for the first byte, then memcmp. glibc's memmem() sets up a two-way
 * search on every call, which cost more than the search itself on ~150-byte lines (30% of
 * the scan under perf); the buffer-wide marker passes keep memmem(). */
static const char *find(const char *p, Py_ssize_t n, const char *lit, Py_ssize_t len)
{
    if (len == 0)
        return p;
    if (n < len)
        return NULL;
    const char *end = p + n - len + 1; /* last possible start + 1 */
    while (p < end) {
        const char *q = memchr(p, lit[0], (size_t)(end - p));
        if (q == NULL)
            return NULL;
        if (memcmp(q + 1, lit + 1, (size_t)(len - 1)) == 0)
            return q;
        p = q + 1;
    }
    return NULL;
}

/* The occurrence a LIT step names at or after `from`, or -1 (the template does not hold). */
static Py_ssize_t locate(const char *p, Py_ssize_t n, Py_ssize_t from, const Step *s)
{
    const char *q;
    if (s->mode == AT_FIRST) {
        q = find(p + from, n - from, s->lit, s->litlen);
        return q == NULL ? -1 : q - p;
    }
    q = find(p, n, s->lit, s->litlen);
    if (q == NULL)
        return -1;
    if (s->mode == AT_UNIQUE) {
        /* any other start, overlapping or not, would give the regex another split */
        if (find(q + 1, n - (q + 1 - p), s->lit, s->litlen) != NULL)
            return -1;
    } else { /* AT_LAST */
        const char *next;
        while ((next = find(q + 1, n - (q + 1 - p), s->lit, s->litlen)) != NULL)
            q = next;
    }
    return q - p < from ? -1 : q - p;
}

/* -- whole buffers: marker passes and line counts ------------------------------------------ */
/* The first occurrence of lit in [p, p+n), for the passes over a whole chunk (megabytes).
 * With SSE2, sixteen candidate starts at a time whose first and last bytes both match
 * (W. Mula's "SIMD-friendly" substring search), each then checked with memcmp: ~5x glibc's
 * memmem() here, where ten such passes over a chunk were a tenth of logscan's time. */
static const char *search(const char *p, Py_ssize_t n, const char *lit, Py_ssize_t len)
{
#ifdef CLOG_SSE2
    if (len >= 2) {
        const __m128i first = _mm_set1_epi8(lit[0]), last = _mm_set1_epi8(lit[len - 1]);
        Py_ssize_t i = 0;
        for (; i + len - 1 + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(p + i + len - 1));
            unsigned mask = (unsigned)_mm_movemask_epi8(
                _mm_and_si128(_mm_cmpeq_epi8(a, first), _mm_cmpeq_epi8(b, last)));
            while (mask != 0) {
                int bit = __builtin_ctz(mask);
                if (memcmp(p + i + bit + 1, lit + 1, (size_t)(len - 2)) == 0)
                    return p + i + bit;
                mask &= mask - 1;
            }
        }
        return find(p + i, n - i, lit, len); /* the last few starts */
    }
#endif
    return memmem(p, (size_t)n, lit, (size_t)len);
}

/* How many "\n" in [p, p+n). */
static Py_ssize_t newlines(const char *p, Py_ssize_t n)
{
    Py_ssize_t count = 0, i = 0;
#ifdef CLOG_SSE2
    /* per byte lane, up to 255 matches (each compare gives -1) before summing the lanes */
    const __m128i nl = _mm_set1_epi8('\n'), zero = _mm_setzero_si128();
    while (i + 16 <= n) {
        __m128i acc = zero;
        for (int k = 0; k < 255 && i + 16 <= n; k++, i += 16)
            acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), nl));
        __m128i sums = _mm_sad_epu8(acc, zero);
        count += _mm_cvtsi128_si32(sums) + _mm_extract_epi16(sums, 4);
    }
#endif
    for (; i < n; i++)
        count += p[i] == '\n';
    return count;
}

/* -- one line against one template ----------------------------------------------------- */
typedef struct {
    Py_ssize_t start[NGROUPS], len[NGROUPS]; /* start -1: the group did not take part */
    Py_ssize_t mstart, mend;                 /* the span regex.search() would match */
} Match;

static void capture(Match *m, int group, Py_ssize_t start, Py_ssize_t len)
{
    if (group >= 0) {
        m->start[group] = start;
        m->len[group] = len;
    }
}

/* Check [p+a, p+a+n) against a field class and record its group(s); 0: does not fit. */
static int field(const char *p, Py_ssize_t a, Py_ssize_t n, int cls, int group, Match *m)
{
    const char *t = p + a;
    int ok;
    switch (cls) {
    case C_ANY: ok = 1; break;
    case C_HOSTPORT: ok = is_hostport(t, n); break;
    case C_PROTO_HOSTPORT: {
        /* (?:(?P<proto>[A-Z]+):)?HOSTPORT: the regex tries the protocol first */
        Py_ssize_t i = 0;
        while (i < n && is_upper((unsigned char)t[i]))
            i++;
        if (i > 0 && i < n && t[i] == ':' && is_hostport(t + i + 1, n - i - 1)) {
            capture(m, G_PROTO, a, i);
            capture(m, G_HOSTPORT, a + i + 1, n - i - 1);
            return 1;
        }
        if (!is_hostport(t, n))
            return 0;
        capture(m, G_HOSTPORT, a, n);
        return 1;
    }
    case C_WORD: ok = all_of(t, n, is_word, 1); break;
    case C_DIGITS: ok = all_of(t, n, is_digit, 1); break;
    case C_UPPER: ok = all_of(t, n, is_upper, 1); break;
    case C_NOQUOTE0: ok = none_of(t, n, "'", 0); break;
    case C_ADDRB: ok = all_of(t, n, is_addrb, 1); break;
    case C_NOSPACE: ok = none_of(t, n, " ", 1); break; /* \S+: the line has no other space */
    case C_EMPTY: ok = n == 0; break;
    case C_ADDR: ok = all_of(t, n, is_addr, 1); break;
    case C_NOQUOTE: ok = none_of(t, n, "'", 1); break;
    case C_NODASH: ok = none_of(t, n, "-", 1); break;
    case C_NOSLASHDQ: ok = none_of(t, n, "/\"", 1); break;
    case C_46: ok = n == 1 && (t[0] == '4' || t[0] == '6'); break;
    case C_CONTEXT_TAIL: { /* [^']*'\.? */
        const char *q = memchr(t, '\'', (size_t)n);
        Py_ssize_t rest = q == NULL ? -1 : n - (q - t) - 1;
        ok = rest == 0 || (rest == 1 && q[1] == '.');
        break;
    }
    case C_OPTMETHOD: /* (?:'[A-Z]+' )? */
        ok = n == 0 || (n >= 4 && t[0] == '\'' && t[n - 2] == '\'' && t[n - 1] == ' ' &&
                        all_of(t + 1, n - 3, is_upper, 1));
        break;
    default: ok = 0;
    }
    if (ok)
        capture(m, group, a, n);
    return ok;
}

static int match(const Rule *r, const char *p, Py_ssize_t n, Match *m)
{
    Py_ssize_t c = 0;
    int cls = C_ANY, group = -1; /* the field the next literal ends (first: search's skip) */
    for (int g = 0; g < NGROUPS; g++)
        m->start[g] = -1;
    m->mstart = -1;
    for (int i = 0; i < r->nsteps; i++) {
        const Step *s = &r->steps[i];
        switch (s->op) {
        case OP_FIELD:
            cls = s->cls;
            group = s->group;
            break;
        case OP_LIT: {
            Py_ssize_t q = locate(p, n, c, s);
            if (q < 0)
                return 0;
            if (m->mstart < 0)
                m->mstart = q; /* the text before the first literal is search()'s skip */
            else if (!field(p, c, q - c, cls, group, m))
                return 0;
            cls = C_ANY;
            group = -1;
            c = q + s->litlen;
            break;
        }
        case OP_OPT: { /* (?:.*?LIT(?P<group>[^CLOSE]*)CLOSE)? before the next literal;
                        * after a literal (base.py checks), so the skipped text is the .*? */
            const char *q = find(p + c, n - c, s->lit, s->litlen);
            if (q != NULL) {
                Py_ssize_t v = q - p + s->litlen;
                const char *e = memchr(p + v, s->close, (size_t)(n - v));
                if (e == NULL)
                    return 0;
                capture(m, s->group, v, e - (p + v));
                c = e - p + 1;
            }
            break;
        }
        case OP_ONEOF: { /* (?:A|B|...) right here, after an empty pending field */
            if (m->mstart < 0 || !field(p, c, 0, cls, group, m))
                return 0;
            Py_ssize_t k = 0, size = PyTuple_GET_SIZE(s->options);
            for (; k < size; k++) {
                PyObject *o = PyTuple_GET_ITEM(s->options, k);
                Py_ssize_t olen = PyBytes_GET_SIZE(o);
                if (olen <= n - c && memcmp(p + c, PyBytes_AS_STRING(o), (size_t)olen) == 0) {
                    c += olen;
                    break;
                }
            }
            if (k == size)
                return 0;
            cls = C_EMPTY; /* what follows in the regex follows at once */
            group = -1;
            break;
        }
        case OP_END: { /* the pending field runs to the end; $ after an optional "." */
            Py_ssize_t len = n - c;
            if (s->mode && len >= 2 && p[n - 1] == '.')
                len--;
            if (!field(p, c, len, cls, group, m))
                return 0;
            c = n;
            break;
        }
        default:
            return 0;
        }
    }
    m->mend = c;
    return m->mstart >= 0;
}

/* -- building the Event as base._compile()'s apply() does -------------------------------- */
#define CLEAN_LIMIT 200

/* events.clean() of printable ASCII: capped at 200 characters plus "...". */
static PyObject *clean(const char *p, Py_ssize_t n)
{
    if (n <= CLEAN_LIMIT)
        return PyUnicode_FromStringAndSize(p, n);
    PyObject *out = PyUnicode_New(CLEAN_LIMIT + 3, 127);
    if (out == NULL)
        return NULL;
    char *d = (char *)PyUnicode_DATA(out);
    memcpy(d, p, CLEAN_LIMIT);
    memcpy(d + CLEAN_LIMIT, "...", 3);
    return out;
}

/* base._uri_account(): the user part of the first sips?:USER@ (USER without @;>), else all. */
static PyObject *uri_account(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        Py_ssize_t u;
        if (memcmp(p + i, "sip:", 4) == 0)
            u = i + 4;
        else if (i + 5 <= n && memcmp(p + i, "sips:", 5) == 0)
            u = i + 5;
        else
            continue;
        Py_ssize_t e = u;
        while (e < n && p[e] != '@' && p[e] != ';' && p[e] != '>')
            e++;
        if (e < n && p[e] == '@')
            return clean(p + u, e - u);
    }
    return clean(p, n);
}

/* base._port(): 1..65535 from up to five ASCII digits, else None. */
static PyObject *port_of(const char *p, Py_ssize_t n)
{
    if (n < 1 || n > 5 || !all_of(p, n, is_digit, 1))
        Py_RETURN_NONE;
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    if (v < 1 || v > 65535)
        Py_RETURN_NONE;
    return PyLong_FromLong(v);
}

static int is_stream(const char *p, Py_ssize_t n)
{
    static const char *const names[] = {"TCP", "TLS", "WS", "WSS"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        if ((Py_ssize_t)strlen(names[k]) == n && strncasecmp(p, names[k], (size_t)n) == 0)
            return 1;
    return 0;
}

static PyObject *address_of(Scanner *self, const char *p, Py_ssize_t n);

/* events.address() through its cache; a new reference, Py_None (defer) or NULL. */
static PyObject *source_of(Scanner *self, const char *p, Py_ssize_t n, Memo *memo)
{
    if (memo->src != NULL && memo->host_len == n && memcmp(memo->host, p, (size_t)n) == 0)
        return Py_NewRef(memo->src);
    PyObject *got = address_of(self, p, n);
    if (got != NULL && n <= (Py_ssize_t)sizeof memo->host) {
        Py_XSETREF(memo->src, Py_NewRef(got));
        memcpy(memo->host, p, (size_t)n);
        memo->host_len = n;
    }
    return got;
}

static PyObject *address_of(Scanner *self, const char *p, Py_ssize_t n)
{
    PyObject *host = PyUnicode_FromStringAndSize(p, n);
    if (host == NULL)
        return NULL;
    PyObject *got = PyDict_GetItemWithError(self->addr_cache, host);
    if (got != NULL) {
        Py_INCREF(got);
    } else if (!PyErr_Occurred()) {
        got = PyObject_CallOneArg(self->address, host);
    }
    Py_DECREF(host);
    return got;
}

/* base.stamp() of a line opening with an Asterisk "[YYYY-MM-DD HH:MM:SS]" head whose
 * minute Context.minutes already holds: the same value and the same cache updates, without
 * the regex. A new reference, or NULL (with no error set when stamp() must do it). */
static PyObject *iso_stamp(Scanner *self, const char *p, Py_ssize_t n, Memo *memo)
{
    static const char shape[] = "[dddd-dd-dd dd:dd:dd]";
    if (n < 21)
        return NULL;
    for (int i = 0; i < 21; i++) {
        int ok = shape[i] == 'd' ? is_digit((unsigned char)p[i])
                 : i == 11       ? p[i] == ' ' || p[i] == 'T'
                                 : p[i] == shape[i];
        if (!ok)
            return NULL;
    }
    int sec = (p[18] - '0') * 10 + (p[19] - '0');
    if (sec > 59)
        return NULL;
    if (PyDict_GET_SIZE(memo->stamps) >= self->stamps_max)
        PyDict_Clear(memo->stamps);
    PyObject *key = PyUnicode_FromStringAndSize(p, 20), *head = NULL, *got = NULL;
    if (key == NULL)
        return NULL;
    got = PyDict_GetItemWithError(memo->stamps, key);
    if (got != NULL && got != Py_None) {
        Py_INCREF(got);
    } else if (!PyErr_Occurred()) {
        PyObject *minute = PyUnicode_FromStringAndSize(p + 1, 17);
        PyObject *base = minute == NULL ? NULL : PyDict_GetItemWithError(memo->minutes, minute);
        Py_XDECREF(minute);
        if (base == NULL || base == Py_None) /* not converted yet, or invalid: stamp() */
            goto out;
        got = PyNumber_Add(base, PyTuple_GET_ITEM(self->seconds, sec));
        if (got == NULL || PyDict_SetItem(memo->stamps, key, got) < 0)
            goto fail;
    }
    if (got == NULL)
        goto out;
    head = PyUnicode_FromStringAndSize(p, 21);
    if (head == NULL || PyDict_SetItem(memo->stamps, head, got) < 0)
        goto fail;
    goto out;
fail:
    Py_CLEAR(got);
out:
    Py_DECREF(key);
    Py_XDECREF(head);
    return got;
}

/* base._challenge_answered(): Asterisk's InvalidPassword names the challenge it sent and
 * the one the request answered; it counts only when the line holds "Challenge=" exactly
 * twice (that pair; Asterisk escapes no quote, so attacker text in AccountID, SessionID or
 * the received nonce can imitate fields, and any imitation makes a third) and the leftmost
 * ,Challenge="([^"]*)",ReceivedChallenge="([^"]*)" after the last ,RemoteAddress=" (the
 * field the rule reads) has its first group non-empty and equal to the second. [^"]* can
 * only end at the next quote, so each start has one possible match: try each
 * ",Challenge=\"" left to right, as the regex does. */
static int challenge_answered(const char *p, Py_ssize_t n)
{
    static const char open[] = ",Challenge=\"", mid[] = "\",ReceivedChallenge=\"";
    static const char remote[] = ",RemoteAddress=\"", word[] = "Challenge=";
    const Py_ssize_t olen = sizeof open - 1, mlen = sizeof mid - 1;
    const Py_ssize_t rlen = sizeof remote - 1, wlen = sizeof word - 1;
    const char *end = p + n, *q, *from = NULL;
    int count = 0;
    for (q = p; (q = find(q, end - q, word, wlen)) != NULL; q += wlen)
        if (++count > 2)
            return 0;
    if (count != 2)
        return 0;
    for (Py_ssize_t i = n - rlen; from == NULL && i >= 0; i--) /* the last: few fields follow */
        if (p[i] == ',' && memcmp(p + i, remote, (size_t)rlen) == 0)
            from = p + i + rlen;
    if (from == NULL)
        return 0;
    for (q = from; (q = find(q, end - q, open, olen)) != NULL; q++) {
        const char *ours = q + olen;
        const char *e1 = memchr(ours, '"', (size_t)(end - ours));
        if (e1 == NULL || end - e1 < mlen || memcmp(e1, mid, (size_t)mlen) != 0)
            continue;
        const char *theirs = e1 + mlen;
        const char *e2 = memchr(theirs, '"', (size_t)(end - theirs));
        if (e2 == NULL)
            continue;
        Py_ssize_t len = e1 - ours; /* the first match decides */
        return len > 0 && e2 - theirs == len && memcmp(ours, theirs, (size_t)len) == 0;
    }
    return 0;
}

/* The Event for a matched line: a new reference, Py_None when the line must be deferred
 * (what apply() would answer with None, so the later rules would be tried), or NULL. */
static PyObject *event_of(Scanner *self, const Rule *r, const char *p, Py_ssize_t n,
                          const Match *m, Memo *memo)
{
    PyObject *outcome, *detail = NULL, *src = NULL, *port = NULL;
    PyObject *account = NULL, *when = NULL, *out = NULL;
    if (r->has_reason) {
        if (m->start[G_REASON] < 0)
            goto defer;
        const char *rp = p + m->start[G_REASON];
        Py_ssize_t rn = m->len[G_REASON];
        outcome = NULL;
        for (int k = 0; k < r->nreasons; k++) {
            if (r->reasons[k].len == rn && memcmp(r->reasons[k].text, rp, (size_t)rn) == 0) {
                outcome = r->reasons[k].outcome;
                detail = Py_NewRef(r->reasons[k].key); /* a key of our own table */
                break;
            }
        }
        if (outcome == NULL) {
            outcome = r->dflt;
            detail = clean(rp, rn);
        }
    } else {
        outcome = r->only;
        detail = clean(p + m->mstart, m->mend - m->mstart);
    }
    if (detail == NULL)
        goto done;
    if (outcome == Py_None)
        goto defer;

    /* the address: hostport (split_hostport()'s rules) or addr + port */
    const char *host, *pt = NULL;
    Py_ssize_t hlen, plen = 0;
    if (m->start[G_HOSTPORT] >= 0) {
        const char *hp = p + m->start[G_HOSTPORT];
        Py_ssize_t len = m->len[G_HOSTPORT];
        if (len > 0 && hp[0] == '[') {
            const char *e = memchr(hp, ']', (size_t)len);
            if (e == NULL)
                goto defer;
            host = hp + 1;
            hlen = e - host;
            if (e + 1 < hp + len && e[1] == ':') {
                pt = e + 2;
                plen = hp + len - pt;
            }
        } else {
            const char *colon = memchr(hp, ':', (size_t)len);
            host = hp;
            hlen = len;
            if (colon != NULL && memchr(colon + 1, ':', (size_t)(hp + len - colon - 1)) == NULL) {
                hlen = colon - hp;
                pt = colon + 1;
                plen = hp + len - pt;
            }
        }
    } else if (m->start[G_ADDR] >= 0) {
        host = p + m->start[G_ADDR];
        hlen = m->len[G_ADDR];
        if (m->start[G_PORT] >= 0) {
            pt = p + m->start[G_PORT];
            plen = m->len[G_PORT];
        }
    } else {
        goto defer;
    }
    src = source_of(self, host, hlen, memo);
    if (src == NULL)
        goto done;
    if (src == Py_None)
        goto defer;
    port = pt == NULL ? Py_NewRef(Py_None) : port_of(pt, plen);
    if (port == NULL)
        goto done;

    if (!PyTuple_Check(outcome) || PyTuple_GET_SIZE(outcome) != 2) {
        PyErr_SetString(PyExc_TypeError, "an outcome is (EventKind, verified)");
        goto done;
    }
    PyObject *kind = PyTuple_GET_ITEM(outcome, 0);
    PyObject *verified = PyTuple_GET_ITEM(outcome, 1);
    if (r->has_proto && r->tcp_verifies && m->start[G_PROTO] >= 0 &&
        is_stream(p + m->start[G_PROTO], m->len[G_PROTO]))
        verified = Py_True;
    /* after the transport, as in apply(): an unanswered challenge proves nothing, TCP or not */
    if (r->unanswered != Py_None && !challenge_answered(p, n)) {
        kind = PyTuple_GET_ITEM(r->unanswered, 0);
        verified = PyTuple_GET_ITEM(r->unanswered, 1);
    }

    if (m->start[G_ACCOUNT] >= 0) {
        const char *a = p + m->start[G_ACCOUNT];
        account = r->account_in_uri ? uri_account(a, m->len[G_ACCOUNT])
                                    : clean(a, m->len[G_ACCOUNT]);
        if (account == NULL)
            goto done;
    } else {
        account = Py_NewRef(Py_None);
    }

    /* the time: the last line's if the head is the same, else Context.stamps under the
     * line's first 21 characters, else stamp() */
    Py_ssize_t hn = n < 21 ? n : 21;
    if (memo->when != NULL && memo->head_len == hn && memcmp(memo->head, p, (size_t)hn) == 0) {
        when = Py_NewRef(memo->when);
    } else {
        PyObject *head = PyUnicode_FromStringAndSize(p, hn);
        if (head == NULL)
            goto done;
        when = PyDict_GetItemWithError(memo->stamps, head);
        Py_DECREF(head);
        if (when != NULL) {
            Py_INCREF(when);
        } else {
            if (PyErr_Occurred())
                goto done;
            when = iso_stamp(self, p, n, memo);
            if (when == NULL) {
                if (PyErr_Occurred())
                    goto done;
                PyObject *line = PyUnicode_FromStringAndSize(p, n);
                if (line == NULL)
                    goto done;
                when = PyObject_CallFunctionObjArgs(self->stamp, line, memo->ctx, NULL);
                Py_DECREF(line);
                if (when == NULL)
                    goto done;
            }
        }
        Py_XSETREF(memo->when, Py_NewRef(when));
        memcpy(memo->head, p, (size_t)hn);
        memo->head_len = hn;
    }

    out = ((PyTypeObject *)self->event_type)->tp_alloc((PyTypeObject *)self->event_type, 8);
    if (out == NULL)
        goto done;
    PyObject *items[8] = {when, kind, src, port, account, self->origin, detail, verified};
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(out, i, Py_NewRef(items[i]));
    /* Not for the cycle collector: nothing an Event holds (datetime, enum, address, int,
     * str, bool) can refer back to it. A flood's events otherwise fill the young
     * generation and are traversed again and again (a tenth of a scan under perf). */
    PyObject_GC_UnTrack(out);
    goto done;
defer:
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(detail);
    Py_XDECREF(src);
    Py_XDECREF(port);
    Py_XDECREF(account);
    Py_XDECREF(when);
    return out;
}

/* -- Scanner ------------------------------------------------------------------------------ */
static int name_index(PyObject *name, const char *const *names, int count, const char *what)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (s != NULL)
        for (int i = 0; i < count; i++)
            if (strcmp(s, names[i]) == 0)
                return i;
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "unknown %s %R", what, name);
    return -1;
}

static int bytes_of(PyObject *o, const char **p, Py_ssize_t *n)
{
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "literals and markers are bytes");
        return -1;
    }
    *p = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* One step: ("lit", bytes, mode) | ("field", group|"", class) | ("end", strip_dot)
 * | ("opt", bytes, group, close byte) | ("oneof", (bytes, ...)). */
static int parse_step(PyObject *t, Step *s)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(t, 0))) {
        PyErr_SetString(PyExc_TypeError, "a step is a tuple (op, ...)");
        return -1;
    }
    const char *op = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 0));
    Py_ssize_t size = PyTuple_GET_SIZE(t);
    memset(s, 0, sizeof *s);
    s->group = -1;
    if (op == NULL)
        return -1;
    if (strcmp(op, "lit") == 0 && size == 3) {
        s->op = OP_LIT;
        if (bytes_of(PyTuple_GET_ITEM(t, 1), &s->lit, &s->litlen) < 0)
            return -1;
        if (s->litlen == 0) {
            PyErr_SetString(PyExc_ValueError, "an empty literal");
            return -1;
        }
        s->mode = name_index(PyTuple_GET_ITEM(t, 2), MODE_NAMES, 3, "literal mode");
        return s->mode < 0 ? -1 : 0;
    }
    if (strcmp(op, "field") == 0 && size == 3) {
        s->op = OP_FIELD;
        PyObject *g = PyTuple_GET_ITEM(t, 1);
        if (PyUnicode_Check(g) && PyUnicode_GET_LENGTH(g) == 0)
            s->group = -1;
        else if ((s->group = name_index(g, GROUP_NAMES, NGROUPS, "group")) < 0)
            return -1;
        s->cls = name_index(PyTuple_GET_ITEM(t, 2), CLASS_NAMES, NCLASSES, "field class");
        return s->cls < 0 ? -1 : 0;
    }
    if (strcmp(op, "end") == 0 && size == 2) {
        s->op = OP_END;
        s->mode = PyObject_IsTrue(PyTuple_GET_ITEM(t, 1));
        return s->mode < 0 ? -1 : 0;
    }
    if (strcmp(op, "opt") == 0 && size == 4) {
        const char *close;
        Py_ssize_t clen;
        s->op = OP_OPT;
        if (bytes_of(PyTuple_GET_ITEM(t, 1), &s->lit, &s->litlen) < 0 ||
            bytes_of(PyTuple_GET_ITEM(t, 3), &close, &clen) < 0)
            return -1;
        if (s->litlen == 0 || clen != 1) {
            PyErr_SetString(PyExc_ValueError, "opt: a literal and one closing byte");
            return -1;
        }
        s->close = close[0];
        s->group = name_index(PyTuple_GET_ITEM(t, 2), GROUP_NAMES, NGROUPS, "group");
        return s->group < 0 ? -1 : 0;
    }
    if (strcmp(op, "oneof") == 0 && size == 2) {
        s->op = OP_ONEOF;
        s->options = PyTuple_GET_ITEM(t, 1);
        if (!PyTuple_Check(s->options) || PyTuple_GET_SIZE(s->options) == 0) {
            PyErr_SetString(PyExc_TypeError, "oneof: a tuple of bytes");
            return -1;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(s->options); k++) {
            PyObject *o = PyTuple_GET_ITEM(s->options, k);
            if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) == 0) {
                PyErr_SetString(PyExc_TypeError, "oneof: non-empty bytes");
                return -1;
            }
            for (Py_ssize_t j = 0; j < k; j++) { /* the regex tries them in order */
                PyObject *e = PyTuple_GET_ITEM(s->options, j);
                Py_ssize_t a = PyBytes_GET_SIZE(e), b = PyBytes_GET_SIZE(o);
                if (memcmp(PyBytes_AS_STRING(e), PyBytes_AS_STRING(o), (size_t)(a < b ? a : b)) == 0) {
                    PyErr_SetString(PyExc_ValueError, "oneof: no option may begin another");
                    return -1;
                }
            }
        }
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unknown step %R", t);
    return -1;
}

/* One rule: (marker, steps, outcomes, only, default, repeat, tcp_verifies, account_in_uri,
 * has_reason, has_proto, unanswered). */
static int parse_rule(PyObject *t, Rule *r)
{
    PyObject *steps;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 11) {
        PyErr_SetString(PyExc_TypeError, "a rule is an 11-tuple");
        return -1;
    }
    if (bytes_of(PyTuple_GET_ITEM(t, 0), &r->marker, &r->mlen) < 0 ||
        bytes_of(PyTuple_GET_ITEM(t, 5), &r->repeat, &r->rlen) < 0)
        return -1;
    steps = PyTuple_GET_ITEM(t, 1);
    r->outcomes = PyTuple_GET_ITEM(t, 2);
    r->only = PyTuple_GET_ITEM(t, 3);
    r->dflt = PyTuple_GET_ITEM(t, 4);
    r->unanswered = PyTuple_GET_ITEM(t, 10);
    if (r->unanswered != Py_None &&
        (!PyTuple_Check(r->unanswered) || PyTuple_GET_SIZE(r->unanswered) != 2)) {
        PyErr_SetString(PyExc_TypeError, "unanswered: None or (EventKind, verified)");
        return -1;
    }
    if (!PyTuple_Check(steps) || !PyDict_Check(r->outcomes)) {
        PyErr_SetString(PyExc_TypeError, "steps are a tuple, outcomes a dict");
        return -1;
    }
    int flags[4];
    for (int i = 0; i < 4; i++)
        if ((flags[i] = PyObject_IsTrue(PyTuple_GET_ITEM(t, 6 + i))) < 0)
            return -1;
    r->tcp_verifies = flags[0];
    r->account_in_uri = flags[1];
    r->has_reason = flags[2];
    r->has_proto = flags[3];
    r->reasons = PyMem_Calloc((size_t)PyDict_GET_SIZE(r->outcomes) + 1, sizeof(struct Reason));
    if (r->reasons == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(r->outcomes, &pos, &key, &value)) {
        struct Reason *e = &r->reasons[r->nreasons++];
        if (!PyUnicode_Check(key) || (e->text = PyUnicode_AsUTF8AndSize(key, &e->len)) == NULL) {
            PyErr_SetString(PyExc_TypeError, "outcomes are keyed by str");
            return -1;
        }
        e->key = key;
        e->outcome = value;
    }
    r->nsteps = (int)PyTuple_GET_SIZE(steps);
    if (r->nsteps == 0)
        return 0;
    r->steps = PyMem_Calloc((size_t)r->nsteps, sizeof(Step));
    if (r->steps == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < r->nsteps; i++)
        if (parse_step(PyTuple_GET_ITEM(steps, i), &r->steps[i]) < 0)
            return -1;
    return 0;
}

static int Scanner_traverse(Scanner *self, visitproc visit, void *arg)
{
    Py_VISIT(self->spec); /* parse_from is bound to the LogFormat that holds this Scanner */
    return 0;
}

static int Scanner_clear(Scanner *self)
{
    Py_CLEAR(self->spec);
    return 0;
}

static void Scanner_dealloc(Scanner *self)
{
    PyObject_GC_UnTrack(self);
    if (self->rules != NULL) {
        for (int i = 0; i < self->nrules; i++) {
            PyMem_Free(self->rules[i].steps);
            PyMem_Free(self->rules[i].reasons);
        }
        PyMem_Free(self->rules);
    }
    PyMem_Free(self->markers);
    Py_XDECREF(self->spec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Scanner(markers, rules, origin, event_type, address, addr_cache, stamp, parse_from,
 *         seconds, stamps_max):
 * markers ((bytes, first rule index), ...) as LogFormat._first; rules as parse_rule(). */
static PyObject *Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *markers, *rules, *origin, *event_type, *address, *addr_cache, *stamp, *parse_from;
    PyObject *seconds;
    Py_ssize_t stamps_max;
    if (kw != NULL && PyDict_GET_SIZE(kw) > 0) {
        PyErr_SetString(PyExc_TypeError, "Scanner() takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!UO!OO!OOO!n:Scanner", &PyTuple_Type, &markers, &PyTuple_Type,
                          &rules, &origin, &PyType_Type, &event_type, &address, &PyDict_Type,
                          &addr_cache, &stamp, &parse_from, &PyTuple_Type, &seconds, &stamps_max))
        return NULL;
    if (PyTuple_GET_SIZE(seconds) != 60) {
        PyErr_SetString(PyExc_ValueError, "seconds: the 60 timedeltas of base._SECONDS");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "event_type must be a tuple subclass");
        return NULL;
    }
    Scanner *self = (Scanner *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->spec = Py_NewRef(args);
    self->origin = origin;
    self->event_type = event_type;
    self->address = address;
    self->addr_cache = addr_cache;
    self->stamp = stamp;
    self->parse_from = parse_from;
    self->seconds = seconds;
    self->stamps_max = stamps_max;
    self->nrules = (int)PyTuple_GET_SIZE(rules);
    self->nmarkers = (int)PyTuple_GET_SIZE(markers);
    self->rules = PyMem_Calloc((size_t)self->nrules + 1, sizeof(Rule));
    self->markers = PyMem_Calloc((size_t)self->nmarkers + 1, sizeof(Marker));
    if (self->rules == NULL || self->markers == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < self->nrules; i++)
        if (parse_rule(PyTuple_GET_ITEM(rules, i), &self->rules[i]) < 0)
            goto fail;
    for (int i = 0; i < self->nmarkers; i++) {
        PyObject *t = PyTuple_GET_ITEM(markers, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
            PyErr_SetString(PyExc_TypeError, "a marker is (bytes, first rule)");
            goto fail;
        }
        if (bytes_of(PyTuple_GET_ITEM(t, 0), &self->markers[i].text, &self->markers[i].len) < 0)
            goto fail;
        long first = PyLong_AsLong(PyTuple_GET_ITEM(t, 1));
        if (first == -1 && PyErr_Occurred())
            goto fail;
        if (first < 0 || first >= self->nrules || self->markers[i].len == 0) {
            PyErr_SetString(PyExc_ValueError, "a marker names a rule that is not there");
            goto fail;
        }
        self->markers[i].first = (int)first;
    }
    self->shift = 1;
    while ((1 << self->shift) <= self->nrules)
        self->shift++;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int is_clean(const char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#ifdef CLOG_SSE2
    /* 16 at a time: a byte below 0x20 or above 0x7e is, as a signed byte, below 0x20
     * (0x80-0xff are negative) or equal to 0x7f */
    const __m128i low = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(a, low), _mm_cmpeq_epi8(a, del))))
            return 0;
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c > 0x7e)
            return 0;
    }
    return 1;
}

/* Append (lineno, event) to out; 0 or -1. */
static int add(PyObject *out, Py_ssize_t lineno, PyObject *ev)
{
    PyObject *n = PyLong_FromSsize_t(lineno);
    if (n == NULL)
        return -1;
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(n);
        return -1;
    }
    PyTuple_SET_ITEM(pair, 0, n);
    PyTuple_SET_ITEM(pair, 1, Py_NewRef(ev));
    PyObject_GC_UnTrack(pair); /* an int and an Event: no cycle (see event_of) */
    int rc = PyList_Append(out, pair);
    Py_DECREF(pair);
    return rc;
}

/* One line holding some marker, rules from `first` on: 0 or -1. */
static int one_line(Scanner *self, const char *p, Py_ssize_t n, int first, Py_ssize_t lineno,
                    Memo *memo, PyObject *out)
{
    int ri = first;
    while (ri < self->nrules && find(p, n, self->rules[ri].marker, self->rules[ri].mlen) == NULL)
        ri++;
    if (ri == self->nrules)
        return 0; /* no rule's marker: parse() finds nothing either */
    const Rule *r = &self->rules[ri];
    PyObject *ev = NULL;
    Match m;
    if (r->nsteps > 0 && is_clean(p, n) && match(r, p, n, &m)) {
        const char *second = NULL;
        if (r->rlen > 0) {
            const char *q = find(p, n, r->repeat, r->rlen);
            second = q == NULL ? NULL : find(q + r->rlen, n - (q + r->rlen - p), r->repeat, r->rlen);
        }
        if (second == NULL) { /* no second candidate: no injection check to make */
            ev = event_of(self, r, p, n, &m, memo);
            if (ev == NULL)
                return -1;
        }
    }
    if (ev == NULL || ev == Py_None) {
        Py_XDECREF(ev);
        self->deferred++;
        PyObject *line = PyUnicode_DecodeUTF8(p, n, "replace");
        if (line == NULL)
            return -1;
        PyObject *idx = PyLong_FromLong(ri);
        if (idx == NULL) {
            Py_DECREF(line);
            return -1;
        }
        ev = PyObject_CallFunctionObjArgs(self->parse_from, idx, line, memo->ctx, NULL);
        Py_DECREF(idx);
        Py_DECREF(line);
        if (ev == NULL)
            return -1;
    }
    int rc = ev == Py_None ? 0 : add(out, lineno, ev);
    Py_DECREF(ev);
    return rc;
}

/* scan(data, ctx, first_line): LogFormat.scan() of str(data, "utf-8", "replace"), data any
 * bytes-like object (bytes, or a view into logscan's read buffer). */
static PyObject *Scanner_scan(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scan(data: bytes-like, ctx, first_line: int)");
        return NULL;
    }
    PyObject *ctx = args[1];
    if (self->spec == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a cleared Scanner");
        return NULL;
    }
    Py_ssize_t lineno = PyLong_AsSsize_t(args[2]);
    if (lineno == -1 && PyErr_Occurred())
        return NULL;
    PyObject *stamps = PyObject_GetAttrString(ctx, "stamps");
    PyObject *minutes = stamps == NULL ? NULL : PyObject_GetAttrString(ctx, "minutes");
    if (minutes == NULL || !PyDict_Check(stamps) || !PyDict_Check(minutes)) {
        Py_XDECREF(stamps);
        Py_XDECREF(minutes);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "ctx.stamps and ctx.minutes must be dicts");
        return NULL;
    }
    Py_buffer view; /* held for the call: the data cannot move or be resized meanwhile */
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(stamps);
        Py_DECREF(minutes);
        return NULL;
    }
    const char *buf = view.buf;
    Py_ssize_t len = view.len;
    Memo memo = {.stamps = stamps, .minutes = minutes, .ctx = ctx};
    PyObject *out = PyList_New(0);
    uint64_t *hits = NULL;
    size_t nhits = 0, cap = 0;
    if (out == NULL)
        goto fail;
    /* every line holding a marker, packed as (line start << shift | first rule) */
    for (int k = 0; k < self->nmarkers; k++) {
        const Marker *mk = &self->markers[k];
        const char *p = buf, *end = buf + len, *q;
        while ((q = search(p, end - p, mk->text, mk->len)) != NULL) {
            const char *ls = memrchr(buf, '\n', (size_t)(q - buf));
            size_t start = ls == NULL ? 0 : (size_t)(ls + 1 - buf);
            if (nhits == cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                uint64_t *grown = PyMem_Realloc(hits, ncap * sizeof *hits);
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto fail;
                }
                hits = grown;
                cap = ncap;
            }
            hits[nhits++] = (uint64_t)start << self->shift | (uint64_t)mk->first;
            const char *eol = memchr(q, '\n', (size_t)(end - q)); /* one hit per line */
            if (eol == NULL)
                break;
            p = eol + 1;
        }
    }
    if (nhits > 1) /* (qsort() of a NULL array is undefined even when empty) */
        qsort(hits, nhits, sizeof *hits, cmp_u64);
    uint64_t mask = ((uint64_t)1 << self->shift) - 1;
    Py_ssize_t prev = 0;
    for (size_t i = 0; i < nhits; i++) {
        Py_ssize_t start = (Py_ssize_t)(hits[i] >> self->shift);
        if (start < prev)
            continue; /* the same line again, for a later rule */
        lineno += newlines(buf + prev, start - prev);
        const char *eol = memchr(buf + start, '\n', (size_t)(len - start));
        Py_ssize_t end = eol == NULL ? len : eol - buf;
        prev = eol == NULL ? start + 1 : end;
        Py_ssize_t n = end - start;
        while (n > 0 && buf[start + n - 1] == '\r')
            n--;
        if (one_line(self, buf + start, n, (int)(hits[i] & mask), lineno, &memo, out) < 0)
            goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyMem_Free(hits);
    PyBuffer_Release(&view);
    Py_DECREF(stamps);
    Py_DECREF(minutes);
    Py_XDECREF(memo.when);
    Py_XDECREF(memo.src);
    return out;
}

static PyObject *Scanner_get_deferred(Scanner *self, void *closure)
{
    return PyLong_FromLong(self->deferred);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Scanner_scan, METH_FASTCALL,
     "scan(data, ctx, first_line): [(line number, Event)] of a chunk of whole lines"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"deferred", (getter)Scanner_get_deferred, NULL, "lines handed to Python so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sipdeflect.detect.logs._clog.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Scanner_new,
    .tp_traverse = (traverseproc)Scanner_traverse,
    .tp_clear = (inquiry)Scanner_clear,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
    .tp_doc = "A LogFormat's rules and templates, for scan() (see the module comment).",
};

/* -- logscan --json: commands/logscan.py's _Lines.json() for a block of events ----------- */
typedef struct {
    char *p;
    size_t len, cap;
} Out;

static int grow(Out *o, size_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(o->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->p = p;
    o->cap = cap;
    return 0;
}

static int put(Out *o, const char *s, size_t n)
{
    if (grow(o, n) < 0)
        return -1;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

/* A str written as it is (Python's f-string of our own ASCII texts); 1 when it is not
 * ASCII (the caller falls back to Python), -1 on error. */
static int put_raw(Out *o, PyObject *s)
{
    if (!PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s))
        return 1;
    return put(o, (const char *)PyUnicode_DATA(s), (size_t)PyUnicode_GET_LENGTH(s));
}

/* json.encoder.encode_basestring_ascii(s): quoted, escaped, ASCII. */
static int put_json_str(Out *o, PyObject *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "a JSON text must be a str");
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (grow(o, (size_t)n * 12 + 2) < 0) /* the worst case: a surrogate pair per char */
        return -1;
    char *d = o->p + o->len;
    *d++ = '"';
    if (PyUnicode_IS_ASCII(s)) { /* the common case: copy the run up to the first escape */
        const char *a = data;
        Py_ssize_t i = 0;
        while (i < n && a[i] >= ' ' && a[i] <= '~' && a[i] != '\\' && a[i] != '"')
            i++;
        memcpy(d, a, (size_t)i);
        if (i == n) {
            d[i] = '"';
            o->len = (size_t)(d + i + 1 - o->p);
            return 0;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            *d++ = (char)c;
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '\\': *d++ = '\\'; continue;
        case '"': *d++ = '"'; continue;
        case '\b': *d++ = 'b'; continue;
        case '\f': *d++ = 'f'; continue;
        case '\n': *d++ = 'n'; continue;
        case '\r': *d++ = 'r'; continue;
        case '\t': *d++ = 't'; continue;
        default: break;
        }
        if (c >= 0x10000) {
            Py_UCS4 v = c - 0x10000, hi = 0xd800 | ((v >> 10) & 0x3ff);
            *d++ = 'u';
            for (int k = 12; k >= 0; k -= 4)
                *d++ = hex[(hi >> k) & 0xf];
            *d++ = '\\';
            c = 0xdc00 | (v & 0x3ff);
        }
        *d++ = 'u';
        for (int k = 12; k >= 0; k -= 4)
            *d++ = hex[(c >> k) & 0xf];
    }
    *d++ = '"';
    o->len = (size_t)(d - o->p);
    return 0;
}

static int put_long(Out *o, PyObject *v)
{
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    char tmp[24], *d = tmp + sizeof tmp; /* (snprintf was a tenth of the time here) */
    unsigned long u = x < 0 ? 0UL - (unsigned long)x : (unsigned long)x;
    do {
        *--d = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0)
        *--d = '-';
    return put(o, d, (size_t)(tmp + sizeof tmp - d));
}

/* _Lines._texts(): the cached text of a time (by value) or of an address (by identity). */
static PyObject *cached(PyObject *cache, PyObject *key, PyObject *obj, Py_ssize_t max, int by_id)
{
    PyObject *got = PyDict_GetItemWithError(cache, key);
    if (got != NULL)
        return by_id ? PyTuple_GET_ITEM(got, 1) : got; /* borrowed: the cache holds it */
    if (PyErr_Occurred())
        return NULL;
    if (PyDict_GET_SIZE(cache) > max)
        PyDict_Clear(cache);
    PyObject *text = by_id ? PyObject_Str(obj) : PyObject_CallMethod(obj, "isoformat", NULL);
    if (text == NULL)
        return NULL;
    PyObject *entry = by_id ? PyTuple_Pack(2, obj, text) : Py_NewRef(text);
    int rc = entry == NULL ? -1 : PyDict_SetItem(cache, key, entry);
    Py_XDECREF(entry);
    Py_DECREF(text);
    if (rc < 0)
        return NULL;
    got = PyDict_GetItemWithError(cache, key);
    return got == NULL ? NULL : by_id ? PyTuple_GET_ITEM(got, 1) : got;
}

/* datetime.isoformat() of a UTC datetime (exactly a datetime, with tzinfo
 * datetime.timezone.utc; the caller checks), written here:
 * "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00". A log's every second is a new time, and
 * isoformat() was the largest cost of the JSON lines under perf. 0 or -1. */
static void digits(char *d, int value, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        d[k] = (char)('0' + value % 10);
        value /= 10;
    }
}

static int put_iso_utc(Out *o, PyObject *when)
{
    char t[32] = "0000-00-00T00:00:00.000000+00:00";
    int us = PyDateTime_DATE_GET_MICROSECOND(when);
    digits(t, PyDateTime_GET_YEAR(when), 4); /* 1..9999 */
    digits(t + 5, PyDateTime_GET_MONTH(when), 2);
    digits(t + 8, PyDateTime_GET_DAY(when), 2);
    digits(t + 11, PyDateTime_DATE_GET_HOUR(when), 2);
    digits(t + 14, PyDateTime_DATE_GET_MINUTE(when), 2);
    digits(t + 17, PyDateTime_DATE_GET_SECOND(when), 2);
    if (us == 0) {
        memcpy(t + 19, "+00:00", 6);
        return put(o, t, 25);
    }
    digits(t + 20, us, 6);
    return put(o, t, 32);
}

/* json_lines(head, items, iso, srcs): the event lines of [(line, Event)], or None when one
 * holds a text _Lines.json() would write raw that is not ASCII (it then formats them). */
static PyObject *json_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyList_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "json_lines(head: str, items: list, iso: dict, srcs: dict)");
        return NULL;
    }
    PyObject *head = args[0], *items = args[1], *iso = args[2], *srcs = args[3];
    /* The buffer is kept between calls (a fresh multi-megabyte one page-faults), unless a
     * call is under way: the Python called below (str(), isoformat()) may switch threads. */
    static Out kept;
    static int busy;
    Out local = {NULL, 0, 0};
    Out *op = busy ? &local : &kept;
    PyObject *last_when = NULL, *last_src = NULL, *t_iso = NULL, *t_src = NULL;
    busy++;
    op->len = 0;
#define o (*op)
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i), *ev;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyTuple_Check(ev = PyTuple_GET_ITEM(pair, 1)) || PyTuple_GET_SIZE(ev) != 8) {
            PyErr_SetString(PyExc_TypeError, "items are (line, Event)");
            break;
        }
        PyObject *when = PyTuple_GET_ITEM(ev, 0), *src = PyTuple_GET_ITEM(ev, 2);
        PyObject *port = PyTuple_GET_ITEM(ev, 3), *account = PyTuple_GET_ITEM(ev, 4);
        /* consecutive events share their time (and often their source) object: the last
         * texts are kept, as references, for the length of this call */
        int direct = PyDateTime_CheckExact(when) &&
                     PyDateTime_DATE_GET_TZINFO(when) == PyDateTime_TimeZone_UTC;
        if (!direct && when != last_when) {
            PyObject *t = cached(iso, when, when, 4096, 0);
            if (t == NULL)
                break;
            Py_XSETREF(t_iso, Py_NewRef(t));
            Py_XSETREF(last_when, Py_NewRef(when));
        }
        if (src != last_src) {
            PyObject *id = PyLong_FromVoidPtr(src);
            PyObject *t = id == NULL ? NULL : cached(srcs, id, src, 65536, 1);
            Py_XDECREF(id);
            if (t == NULL)
                break;
            Py_XSETREF(t_src, Py_NewRef(t));
            Py_XSETREF(last_src, Py_NewRef(src));
        }
        int verified = PyObject_IsTrue(PyTuple_GET_ITEM(ev, 7));
        if (verified < 0)
            break;
        /* each call returns 0, 1 (not ASCII: give up) or -1; || stops at the first */
        rc = put_raw(&o, head) || put_long(&o, PyTuple_GET_ITEM(pair, 0)) ||
             PUTS(&o, ", \"time\": \"") || (direct ? put_iso_utc(&o, when) : put_raw(&o, t_iso)) ||
             PUTS(&o, "\", \"kind\": \"") || put_raw(&o, PyTuple_GET_ITEM(ev, 1)) ||
             PUTS(&o, "\", \"source\": \"") || put_raw(&o, t_src) || PUTS(&o, "\", \"port\": ");
        if (rc == 0)
            rc = port == Py_None ? PUTS(&o, "null") : put_long(&o, port);
        if (rc == 0)
            rc = PUTS(&o, ", \"account\": ") ||
                 (account == Py_None ? PUTS(&o, "null") : put_json_str(&o, account)) ||
                 PUTS(&o, ", \"origin\": \"") || put_raw(&o, PyTuple_GET_ITEM(ev, 5)) ||
                 PUTS(&o, "\", \"verified\": ") ||
                 (verified ? PUTS(&o, "true") : PUTS(&o, "false")) ||
                 PUTS(&o, ", \"detail\": ") || put_json_str(&o, PyTuple_GET_ITEM(ev, 6)) ||
                 PUTS(&o, "}\n");
    }
    PyObject *out = NULL; /* rc: 0, or 1 after an error (set) or a text that is not ASCII */
    if (PyErr_Occurred() == NULL) {
        if (rc != 0)
            out = Py_NewRef(Py_None);
        else if ((out = PyUnicode_New((Py_ssize_t)o.len, 127)) != NULL)
            memcpy(PyUnicode_DATA(out), o.p, o.len);
    }
    if (op == &local || o.cap > (64u << 20)) { /* do not keep an outsized one */
        PyMem_Free(o.p);
        o.p = NULL;
        o.cap = 0;
    }
#undef o
    busy--;
    Py_XDECREF(last_when);
    Py_XDECREF(last_src);
    Py_XDECREF(t_iso);
    Py_XDECREF(t_src);
    return out;
}

/* count_newlines(data): data.count(b"\\n"), for the line number after a chunk. */
static PyObject *count_newlines(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = newlines(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

static PyMethodDef clog_methods[] = {
    {"count_newlines", count_newlines, METH_O, "data.count(b'\\n'), SIMD"},
    {"json_lines", (PyCFunction)(void (*)(void))json_lines, METH_FASTCALL,
     "json_lines(head, items, iso, srcs): logscan --json's lines for a block of events"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef clog_module = {
    PyModuleDef_HEAD_INIT, "_clog", "PBX log scanning in C (see base.py).", -1,
    clog_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__clog(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&clog_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
