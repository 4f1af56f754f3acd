/* The decoy's hot path in C: fastpath.py's scan() and build(), the same rules, the same
 * results, plus View: the same reading kept as offsets into the datagram. A unique flood
 * datagram cost ~9 us of Python in scan + build (line split, per-line partition, dict
 * building, Via rewriting, byte formatting), then ~2.7 us in their C versions (with
 * strategy.prepare()), most of it building the dict and bytes the hot path never reads;
 * view() + View.reply() take ~0.9 us (./dev bench decoy --in-process).
 * Python keeps every decision (guard, budget, strategy, events): this module only reads a
 * datagram (view(): method, header offsets, and strategy.prepare()'s four features; scan():
 * (method, {name: first value}, [Via values])) and formats an answer; Batch below does
 * mmsg.Batch's recvmmsg/sendmmsg bookkeeping. Optional: fastpath.py and mmsg.py fall back
 * to their Python twins when this is not built; tests/decoy/test_cfast.py and test_batch.py
 * hold the two equal (vectors, a fuzzed corpus, real sockets) and run this file under ASan
 * and UBSan. Attacker bytes: every index is bounded by the buffer's length; no fixed-size
 * buffer receives attacker data (answers are sized first, then written). Built by the
 * package's build backend (pyproject.toml's ext-modules), optional. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define MAX_MESSAGE 65535
#define MAX_HEADERS 128
#define MAX_BODY 65535
#define MAX_CSEQ 2147483647L

static PyObject *names_cache;   /* fastpath: sip.fields._names (raw name -> canonical str) */
static PyObject *canonical;     /* sip.fields.canonical_name */
static PyObject *parse_error;   /* errors.SipParseError */
static PyObject *methods;       /* known method bytes -> interned str */
static PyObject *mandatory;     /* tuple of the mandatory canonical names */
static PyObject *s_via, *s_to, *s_from, *s_callid, *s_cseq, *s_clen;

/* RFC 3261 25.1 token characters (sip.fields.TOKEN). */
static int is_token(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-.!%*_+`'~", c) != NULL;
}

/* Python's bytes.split() whitespace and bytes.strip() default set. */
static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* The whitespace-separated words of [p, end) (bytes.split()): their count; (start, length)
 * of the first max - 1 of them and, in slot max - 1, of the last one seen. */
static int words(const char *p, const char *end, const char **start, Py_ssize_t *len, int max)
{
    int n = 0;
    while (p < end) {
        while (p < end && is_space((unsigned char)*p))
            p++;
        if (p >= end)
            break;
        const char *w = p;
        while (p < end && !is_space((unsigned char)*p))
            p++;
        int slot = n < max ? n : max - 1;
        start[slot] = w;
        len[slot] = p - w;
        n++;
    }
    return n;
}

static int all_digits(const char *p, Py_ssize_t n)
{
    if (n <= 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

static long small_int(const char *p, Py_ssize_t n) /* n <= 10 digits: fits a long */
{
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    return v;
}

/* Spellings seen in nearly every request, with what canonical_name() gives for them
 * (lower-cased long form): looked up without making a bytes object. */
static const char *const COMMON[][2] = {
    {"Via", "via"}, {"From", "from"}, {"To", "to"}, {"Call-ID", "call-id"},
    {"CSeq", "cseq"}, {"Contact", "contact"}, {"Max-Forwards", "max-forwards"},
    {"User-Agent", "user-agent"}, {"Content-Length", "content-length"},
    {"Accept", "accept"}, {"Authorization", "authorization"}, {"Expires", "expires"},
    {"Allow", "allow"}, {"Supported", "supported"}, {"Content-Type", "content-type"},
    {"Proxy-Authorization", "proxy-authorization"},
    {"Call-Id", "call-id"}, {"v", "via"}, {"f", "from"}, {"t", "to"}, {"i", "call-id"},
    {"m", "contact"}, {"l", "content-length"}, {"c", "content-type"},
    {"via", "via"}, {"from", "from"}, {"to", "to"}, {"call-id", "call-id"}, {"cseq", "cseq"},
    {"contact", "contact"}, {"max-forwards", "max-forwards"}, {"user-agent", "user-agent"},
    {"content-length", "content-length"},
};
#define N_COMMON (sizeof COMMON / sizeof COMMON[0])
static PyObject *common_names[N_COMMON];
static Py_ssize_t common_len[N_COMMON];

/* The canonical name of a raw header name: the common table, the shared cache, else
 * canonical_name(raw) (which validates and caches). New reference; NULL with no error
 * set = "defer". */
static PyObject *name_of(const char *p, Py_ssize_t n)
{
    for (size_t i = 0; i < N_COMMON; i++)
        if (common_len[i] == n && memcmp(COMMON[i][0], p, (size_t)n) == 0) {
            Py_INCREF(common_names[i]);
            return common_names[i];
        }
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(names_cache, raw);
    if (name != NULL) {
        Py_DECREF(raw);
        Py_INCREF(name);
        return name;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    name = PyObject_CallOneArg(canonical, raw);
    Py_DECREF(raw);
    if (name == NULL && PyErr_ExceptionMatches(parse_error))
        PyErr_Clear(); /* a bad header name: the SIP core decides */
    return name;
}

/* -- build ------------------------------------------------------------------------------ */

/* zlib's CRC-32, slicing by 8 (eight 256-entry tables): a byte at a time was a chain of
 * dependent loads that cost more than the rest of reading a datagram. */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xFF];
}

/* zlib.crc32(buf, start) */
static unsigned long crc32_of(const char *p, Py_ssize_t n, unsigned long start)
{
    const unsigned char *b = (const unsigned char *)p;
    uint32_t c = (uint32_t)start ^ 0xFFFFFFFFU;
    for (; n >= 8; n -= 8, b += 8) {
        uint32_t lo = c ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                           (uint32_t)b[3] << 24);
        uint32_t hi = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                      (uint32_t)b[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
    }
    while (n-- > 0)
        c = crc_table[0][(c ^ *b++) & 0xFF] ^ (c >> 8);
    return (unsigned long)(c ^ 0xFFFFFFFFU);
}

/* A growable output buffer (sized generously, checked on every write). */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int put(Buf *b, const char *s, Py_ssize_t n)
{
    if (n < 0)
        return -1;
    if (b->len + n > b->cap) {
        Py_ssize_t cap = (b->cap + n) * 2;
        char *q = PyMem_Realloc(b->p, (size_t)cap);
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int puts_(Buf *b, const char *s) { return put(b, s, (Py_ssize_t)strlen(s)); }

/* Value bytes, with CR, LF and NUL turned into spaces when `unsafe` (build's _UNSAFE.sub). */
static int put_value(Buf *b, const char *s, Py_ssize_t n, int unsafe)
{
    Py_ssize_t at = b->len;
    if (put(b, s, n) < 0)
        return -1;
    if (unsafe)
        for (Py_ssize_t i = at; i < b->len; i++)
            if (b->p[i] == '\r' || b->p[i] == '\n' || b->p[i] == '\0')
                b->p[i] = ' ';
    return 0;
}

/* ASCII-only case-insensitive equality (bytes.lower(), re.IGNORECASE on bytes): strncasecmp
 * would follow the C locale, and a Turkish one lower-cases 'I' differently. */
static int ascii_ieq(const char *s, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[i])
            return 0;
    }
    return 1;
}

static void strip_ws(const char **s, const char **e)
{
    while (*s < *e && is_space((unsigned char)**s))
        (*s)++;
    while (*e > *s && is_space((unsigned char)(*e)[-1]))
        (*e)--;
}

/* sip.build.top_via_with_source(via, host, port) appended to b. */
static int put_top_via(Buf *b, const char *v, const char *ve, const char *host,
                       Py_ssize_t hlen, long port, int unsafe)
{
    const char *semi = memchr(v, ';', (size_t)(ve - v));
    const char *first_end = semi ? semi : ve;
    /* _sent_by_host(first): the last whitespace word when there are at least two. */
    const char *sb = NULL;
    Py_ssize_t sbl = 0;
    if (words(v, first_end, &sb, &sbl, 1) < 2)
        sbl = 0;
    const char *hs = "";
    Py_ssize_t hl = 0;
    if (sbl > 0 && sb[0] == '[') {
        /* sent_by[1 : sent_by.find(b"]")]: find -1 gives [1:-1] */
        const char *rb = memchr(sb, ']', (size_t)sbl);
        Py_ssize_t stop = rb ? rb - sb : sbl - 1;
        if (stop > 1) {
            hs = sb + 1;
            hl = stop - 1;
        }
    } else if (sbl > 0) {
        const char *c = memchr(sb, ':', (size_t)sbl);
        hs = sb;
        hl = c ? c - sb : sbl;
    }
    int want_received = !(hl == hlen && memcmp(hs, host, (size_t)hl) == 0);
    if (put_value(b, v, first_end - v, unsafe) < 0)
        return -1;
    const char *p = semi;
    while (p != NULL && p < ve) {
        const char *ps = p + 1;
        const char *pe = memchr(ps, ';', (size_t)(ve - ps));
        if (pe == NULL)
            pe = ve;
        const char *eq = memchr(ps, '=', (size_t)(pe - ps));
        const char *ns = ps, *ne = eq ? eq : pe;
        strip_ws(&ns, &ne);
        Py_ssize_t nl = ne - ns;
        if (nl == 8 && ascii_ieq(ns, "received", 8)) {
            /* replaced below */
        } else if (nl == 5 && ascii_ieq(ns, "rport", 5) && eq == NULL) {
            char num[32];
            int k = snprintf(num, sizeof num, ";rport=%ld", port);
            if (put(b, num, k) < 0)
                return -1;
            want_received = 1;
        } else {
            if (put(b, ";", 1) < 0 || put_value(b, ps, pe - ps, unsafe) < 0)
                return -1;
        }
        p = pe;
    }
    if (want_received && (puts_(b, ";received=") < 0 || put_value(b, host, hlen, unsafe) < 0))
        return -1;
    return 0;
}

/* sip.fields.split_list over [v, ve), then the top Via rewritten, joined by ", ". */
static int put_via_list(Buf *b, const char *v, const char *ve, const char *host,
                        Py_ssize_t hlen, long port, int unsafe)
{
    if (memchr(v, ',', (size_t)(ve - v)) == NULL)
        return put_top_via(b, v, ve, host, hlen, port, unsafe);
    int quoted = 0, angle = 0, escaped = 0, first = 1;
    const char *start = v;
    for (const char *p = v;; p++) {
        int at_end = p >= ve;
        int cut = at_end;
        if (!at_end) {
            char ch = *p;
            if (escaped)
                escaped = 0;
            else if (quoted) {
                if (ch == '\\')
                    escaped = 1;
                else if (ch == '"')
                    quoted = 0;
            } else if (ch == '"')
                quoted = 1;
            else if (ch == '<')
                angle = 1;
            else if (ch == '>')
                angle = 0;
            else if (ch == ',' && !angle)
                cut = 1;
        }
        if (cut) {
            const char *s = start, *e = p;
            strip_ws(&s, &e);
            if (e > s) {
                if (!first && puts_(b, ", ") < 0)
                    return -1;
                if (first ? put_top_via(b, s, e, host, hlen, port, unsafe) < 0
                          : put_value(b, s, e - s, unsafe) < 0)
                    return -1;
                first = 0;
            }
            start = p + 1;
        }
        if (at_end)
            break;
    }
    if (first) { /* split_list gave nothing: fastpath.build fails the same way */
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        return -1;
    }
    return 0;
}

/* build's _TAG = rb";\s*tag\s*=" (ignore case), searched from `from`. */
static int has_tag(const char *s, Py_ssize_t n, Py_ssize_t from)
{
    for (Py_ssize_t i = from; i < n; i++) {
        if (s[i] != ';')
            continue;
        Py_ssize_t j = i + 1;
        while (j < n && is_space((unsigned char)s[j]))
            j++;
        if (j + 3 > n || !ascii_ieq(s + j, "tag", 3))
            continue;
        j += 3;
        while (j < n && is_space((unsigned char)s[j]))
            j++;
        if (j < n && s[j] == '=')
            return 1;
    }
    return 0;
}

static int get_bytes(PyObject *index, PyObject *key, const char **s, Py_ssize_t *n)
{
    PyObject *v = PyDict_GetItemWithError(index, key);
    if (v == NULL) {
        if (PyErr_Occurred())
            return -1;
        *s = "";
        *n = 0;
        return 0;
    }
    if (!PyBytes_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "header values must be bytes");
        return -1;
    }
    *s = PyBytes_AS_STRING(v);
    *n = PyBytes_GET_SIZE(v);
    return 0;
}

static int any_unsafe(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

/* The answer: status line, Vias (the top one rewritten), From, To (tagged), Call-ID, CSeq,
 * the extra block, Content-Length: 0. `unsafe`: CR, LF and NUL become spaces. */
static PyObject *answer_of(const char *line, Py_ssize_t line_n, long status, const Span *vias,
                           Py_ssize_t nvias, Span fr, Span to, Span ci, Span cs,
                           const char *host, Py_ssize_t hlen, long port, const char *extra,
                           Py_ssize_t extra_n, int unsafe)
{
    Buf b = {NULL, 0, 0};
    Py_ssize_t guess = 160 + fr.n + to.n + ci.n + cs.n + line_n + extra_n + hlen * 2;
    for (Py_ssize_t i = 0; i < nvias; i++)
        guess += vias[i].n + 8;
    b.p = PyMem_Malloc((size_t)guess);
    if (b.p == NULL)
        return PyErr_NoMemory();
    b.cap = guess;
    if (put(&b, line, line_n) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < nvias; i++) {
        const char *s = vias[i].p;
        Py_ssize_t n = vias[i].n;
        if (puts_(&b, "Via: ") < 0)
            goto fail;
        if (i == 0 ? put_via_list(&b, s, s + n, host, hlen, port, unsafe) < 0
                   : put_value(&b, s, n, unsafe) < 0)
            goto fail;
        if (puts_(&b, "\r\n") < 0)
            goto fail;
    }
    if (puts_(&b, "From: ") < 0 || put_value(&b, fr.p, fr.n, unsafe) < 0 ||
        puts_(&b, "\r\nTo: ") < 0 || put_value(&b, to.p, to.n, unsafe) < 0)
        goto fail;
    Py_ssize_t gt = -1;
    for (Py_ssize_t i = to.n - 1; i >= 0; i--)
        if (to.p[i] == '>') {
            gt = i;
            break;
        }
    if (status != 100 && !has_tag(to.p, to.n, gt + 1)) {
        unsigned long crc = crc32_of(fr.p, fr.n, crc32_of(ci.p, ci.n, 0));
        char tag[24];
        int k = snprintf(tag, sizeof tag, ";tag=%08lx", crc & 0xFFFFFFFFUL);
        if (put(&b, tag, k) < 0)
            goto fail;
    }
    if (puts_(&b, "\r\nCall-ID: ") < 0 || put_value(&b, ci.p, ci.n, unsafe) < 0 ||
        puts_(&b, "\r\nCSeq: ") < 0 || put_value(&b, cs.p, cs.n, unsafe) < 0 ||
        puts_(&b, "\r\n") < 0 || put(&b, extra, extra_n) < 0 ||
        puts_(&b, "Content-Length: 0\r\n\r\n") < 0)
        goto fail;
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.len);
    PyMem_Free(b.p);
    return out;
fail:
    PyMem_Free(b.p);
    return NULL;
}

/* build(index, vias, status, status_line, host, port, extra, clean) -> bytes
 * fastpath.build with the reason phrase's status line (b"SIP/2.0 200 OK\r\n") and the extra
 * header block (already escaped) given by the caller. */
static PyObject *build(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyDict_Check(args[0]) || !PyList_Check(args[1]) ||
        !PyLong_Check(args[2]) || !PyBytes_Check(args[3]) || !PyUnicode_Check(args[4]) ||
        !PyLong_Check(args[5]) || !PyBytes_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                         "build(index: dict, vias: list, status: int, status_line: bytes, "
                         "host: str, port: int, extra: bytes, clean: bool)");
        return NULL;
    }
    PyObject *index = args[0], *vias = args[1];
    long status = PyLong_AsLong(args[2]);
    long port = PyLong_AsLong(args[5]);
    if ((status == -1 || port == -1) && PyErr_Occurred())
        return NULL;
    int clean = PyObject_IsTrue(args[7]);
    if (clean < 0)
        return NULL;
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(args[4], &hlen);
    if (host == NULL)
        return NULL;
    Span fr, to, ci, cs;
    if (get_bytes(index, s_from, &fr.p, &fr.n) < 0 || get_bytes(index, s_to, &to.p, &to.n) < 0 ||
        get_bytes(index, s_callid, &ci.p, &ci.n) < 0 ||
        get_bytes(index, s_cseq, &cs.p, &cs.n) < 0)
        return NULL;
    Py_ssize_t nvias = PyList_GET_SIZE(vias);
    Span *vs = PyMem_Malloc(sizeof(Span) * (size_t)(nvias ? nvias : 1));
    if (vs == NULL)
        return PyErr_NoMemory();
    int unsafe = 0;
    if (!clean)
        /* _UNSAFE over the rewritten Vias and the fixed values; the rewrite adds only the
         * host (a str we were given) and digits, so testing the inputs is the same test. */
        unsafe = any_unsafe(fr.p, fr.n) || any_unsafe(to.p, to.n) || any_unsafe(ci.p, ci.n) ||
                 any_unsafe(cs.p, cs.n) || any_unsafe(host, hlen);
    for (Py_ssize_t i = 0; i < nvias; i++) {
        PyObject *v = PyList_GET_ITEM(vias, i);
        if (!PyBytes_Check(v)) {
            PyMem_Free(vs);
            PyErr_SetString(PyExc_TypeError, "Via values must be bytes");
            return NULL;
        }
        vs[i].p = PyBytes_AS_STRING(v);
        vs[i].n = PyBytes_GET_SIZE(v);
        if (!clean && !unsafe)
            unsafe = any_unsafe(vs[i].p, vs[i].n);
    }
    PyObject *out = answer_of(PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]), status, vs,
                              nvias, fr, to, ci, cs, host, hlen, port,
                              PyBytes_AS_STRING(args[6]), PyBytes_GET_SIZE(args[6]), unsafe);
    PyMem_Free(vs);
    return out;
}

/* -- View: a plain request as offsets into its datagram -----------------------------------
 * scan() used to build {name: first value} and [Via values] for every datagram: ~1.4 us of
 * dict and bytes objects the hot path mostly never reads. A View keeps the header lines as
 * (canonical name, value offsets) in one object, computes what strategy.prepare() needs,
 * and formats answers straight from the offsets; index and vias are built only when asked
 * (events, the odd answer). view(data) accepts exactly what scan() accepts; scan() is now
 * view() plus those two. */

enum { S_VIA, S_FROM, S_TO, S_CALLID, S_CSEQ, S_CLEN, S_AUTH, S_PAUTH, N_SLOTS };
static const char *const SLOT_NAMES[N_SLOTS] = {
    "via", "from", "to", "call-id", "cseq", "content-length", "authorization",
    "proxy-authorization",
};
static PyObject *slot_names[N_SLOTS];

/* The first CRLFCRLF in [p, end), or NULL (memmem's set-up costs more than this search on
 * a few hundred bytes). */
static const char *end_of_head(const char *p, const char *end)
{
    while (end - p >= 4) {
        const char *cr = memchr(p, '\r', (size_t)(end - p - 3));
        if (cr == NULL)
            return NULL;
        if (cr[1] == '\n' && cr[2] == '\r' && cr[3] == '\n')
            return cr;
        p = cr + 1;
    }
    return NULL;
}
static int common_slot[N_COMMON];

static PyObject *method_class;  /* strategy._METHOD_CLASS */
static PyObject *unknown_class; /* its default, "UNKNOWN" */
static PyObject *probe_tag;     /* strategy.SVCRACK_PROBE_TAG (bytes) */
static PyObject *status_line_of; /* fastpath._status_line */
static int mandatory_slots[N_SLOTS];
static int n_mandatory = -1; /* -1: configure() not called yet */
#define N_STATUS 600         /* status lines cached for 100..699 */
static PyObject *status_lines[N_STATUS];

typedef struct {
    PyObject *name; /* canonical name (str), a new reference */
    int slot;       /* S_* or -1 */
    Py_ssize_t at, n; /* the stripped value: data[at : at + n] */
} Field;

typedef struct {
    PyObject_VAR_HEAD
    PyObject *data, *method, *prepared; /* bytes, str, strategy.Prepared */
    PyObject *index, *vias;             /* built on first use */
    Py_ssize_t filled;                  /* fields[0:filled] hold a name reference */
    Py_ssize_t first[N_SLOTS];          /* the first field of each slot, or -1 */
    Field fields[1];
} ViewObject;

static PyTypeObject ViewType;

static int slot_of(PyObject *name)
{
    for (int i = 0; i < N_SLOTS; i++)
        if (name == slot_names[i] ||
            (PyUnicode_Check(name) && PyUnicode_Compare(name, slot_names[i]) == 0))
            return i;
    return -1;
}

static void View_dealloc(ViewObject *self)
{
    for (Py_ssize_t i = 0; i < self->filled; i++)
        Py_DECREF(self->fields[i].name);
    Py_XDECREF(self->data);
    Py_XDECREF(self->method);
    Py_XDECREF(self->prepared);
    Py_XDECREF(self->index);
    Py_XDECREF(self->vias);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Span field_span(ViewObject *v, int slot)
{
    Span s = {"", 0};
    Py_ssize_t i = v->first[slot];
    if (i >= 0) {
        s.p = PyBytes_AS_STRING(v->data) + v->fields[i].at;
        s.n = v->fields[i].n;
    }
    return s;
}

/* strategy.prepare(method, index): (method class, credentials, svcrack probe, aor_key). */
static PyObject *prepared_of(ViewObject *v)
{
    PyObject *cls = PyDict_GetItemWithError(method_class, v->method);
    if (cls == NULL) {
        if (PyErr_Occurred())
            return NULL;
        cls = unknown_class;
    }
    PyObject *auth = v->first[S_AUTH] >= 0 || v->first[S_PAUTH] >= 0 ? Py_True : Py_False;
    Span fr = field_span(v, S_FROM), to = field_span(v, S_TO);
    Py_ssize_t tn = PyBytes_GET_SIZE(probe_tag);
    PyObject *probe = fr.n >= tn && memmem(fr.p, (size_t)fr.n, PyBytes_AS_STRING(probe_tag),
                                            (size_t)tn) != NULL
                          ? Py_True
                          : Py_False;
    unsigned long key = crc32_of(to.p, to.n, 0) & 0xFFFFFFFFUL;
    PyObject *aor = PyLong_FromUnsignedLong(key ? key : 1);
    if (aor == NULL)
        return NULL;
    PyObject *out = PyTuple_Pack(4, cls, auth, probe, aor);
    Py_DECREF(aor);
    return out;
}

/* A View of data, Py_None when scan() would defer (a new reference either way), NULL on
 * error. The rules are scan()'s: see fastpath.scan_py. */
static PyObject *make_view(PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "view() needs bytes");
        return NULL;
    }
    if (n_mandatory < 0) {
        PyErr_SetString(PyExc_RuntimeError, "_cfast.configure() was not called");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    if (size > MAX_MESSAGE || (size > 0 && (data[0] == '\r' || data[0] == '\n')) ||
        (size >= 4 && memcmp(data, "SIP/", 4) == 0))
        Py_RETURN_NONE;
    const char *hend = end_of_head(data, data + size);
    if (hend == NULL)
        Py_RETURN_NONE;
    /* Every CR and LF of the head must be a CRLF; no NUL; no folding; 1..128 breaks. The
     * CRs are kept: crs[k] ends line k (the request line is line 0). */
    const char *crs[MAX_HEADERS + 1];
    Py_ssize_t breaks = 0;
    Py_ssize_t hsize = hend - data;
    if (memchr(data, '\0', (size_t)hsize) != NULL)
        Py_RETURN_NONE;
    for (const char *p = data; p < hend;) {
        const char *cr = memchr(p, '\r', (size_t)(hend - p));
        if (cr == NULL)
            break;
        if (cr + 1 >= hend || cr[1] != '\n')
            Py_RETURN_NONE;
        if (cr + 2 < hend && (cr[2] == ' ' || cr[2] == '\t'))
            Py_RETURN_NONE;
        if (breaks == MAX_HEADERS)
            Py_RETURN_NONE; /* a 129th break */
        crs[breaks++] = cr;
        p = cr + 2;
    }
    /* Each CR is followed by an LF; as many LFs as CRs means no LF stands alone. */
    Py_ssize_t lfs = 0;
    for (const char *p = data; p < hend && lfs <= breaks; lfs++) {
        const char *lf = memchr(p, '\n', (size_t)(hend - p));
        if (lf == NULL)
            break;
        p = lf + 1;
    }
    if (lfs != breaks)
        Py_RETURN_NONE;
    if (breaks < 1)
        Py_RETURN_NONE;
    crs[breaks] = hend;
    const char *l0end = crs[0];
    const char *w[3];
    Py_ssize_t wl[3];
    if (words(data, l0end, w, wl, 3) != 3 || wl[2] != 7 || memcmp(w[2], "SIP/2.0", 7) != 0 ||
        memchr(w[1], ':', (size_t)wl[1]) == NULL)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < wl[0]; i++)
        if (!is_token((unsigned char)w[0][i]))
            Py_RETURN_NONE;
    const char *mptr = w[0];
    Py_ssize_t mlen = wl[0];

    /* breaks header lines: the head has breaks CRLFs, the first ends the request line. */
    ViewObject *v = PyObject_NewVar(ViewObject, &ViewType, breaks);
    if (v == NULL)
        return NULL;
    v->data = v->method = v->prepared = v->index = v->vias = NULL;
    v->filled = 0;
    for (int i = 0; i < N_SLOTS; i++)
        v->first[i] = -1;
    Py_INCREF(arg);
    v->data = arg;
    PyObject *raw_method = PyBytes_FromStringAndSize(mptr, mlen);
    if (raw_method == NULL)
        goto fail;
    v->method = PyDict_GetItemWithError(methods, raw_method);
    Py_DECREF(raw_method);
    if (v->method != NULL)
        Py_INCREF(v->method);
    else if (PyErr_Occurred() || (v->method = PyUnicode_DecodeASCII(mptr, mlen, NULL)) == NULL)
        goto fail;

    for (Py_ssize_t k = 1; k <= breaks; k++) {
        const char *line = crs[k - 1] + 2, *lend = crs[k];
        const char *colon = memchr(line, ':', (size_t)(lend - line));
        if (colon == NULL)
            goto defer; /* a header line without a colon */
        Py_ssize_t nlen = colon - line;
        PyObject *name = NULL;
        int slot = -1;
        for (size_t i = 0; i < N_COMMON; i++)
            if (common_len[i] == nlen && COMMON[i][0][0] == line[0] &&
                memcmp(COMMON[i][0], line, (size_t)nlen) == 0) {
                name = common_names[i];
                Py_INCREF(name);
                slot = common_slot[i];
                break;
            }
        if (name == NULL) {
            name = name_of(line, nlen);
            if (name == NULL) {
                if (PyErr_Occurred())
                    goto fail;
                goto defer;
            }
            if (!PyUnicode_Check(name)) { /* the name cache holds str: never trust it blindly */
                Py_DECREF(name);
                goto defer;
            }
            slot = slot_of(name);
        }
        if (v->filled >= breaks) { /* cannot happen: one field per CRLF */
            Py_DECREF(name);
            PyErr_SetString(PyExc_RuntimeError, "view: more header lines than line breaks");
            goto fail;
        }
        const char *s = colon + 1, *e = lend;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        Field *f = &v->fields[v->filled++];
        f->name = name;
        f->slot = slot;
        f->at = s - data;
        f->n = e - s;
        if (slot >= 0 && v->first[slot] < 0)
            v->first[slot] = v->filled - 1;
    }
    for (int i = 0; i < n_mandatory; i++)
        if (v->first[mandatory_slots[i]] < 0)
            goto defer;
    {
        Span cseq = field_span(v, S_CSEQ);
        const char *cw[3];
        Py_ssize_t cl[3];
        if (words(cseq.p, cseq.p + cseq.n, cw, cl, 3) != 2 || !all_digits(cw[0], cl[0]) ||
            cl[0] > 10 || small_int(cw[0], cl[0]) > MAX_CSEQ || cl[1] != mlen ||
            memcmp(cw[1], mptr, (size_t)mlen) != 0)
            goto defer;
    }
    if (v->first[S_CLEN] >= 0) {
        Span c = field_span(v, S_CLEN);
        if (!all_digits(c.p, c.n) || c.n > 9 || small_int(c.p, c.n) > MAX_BODY ||
            small_int(c.p, c.n) > size - (hend - data) - 4)
            goto defer;
    }
    if ((v->prepared = prepared_of(v)) == NULL)
        goto fail;
    return (PyObject *)v;
defer:
    Py_DECREF(v);
    Py_RETURN_NONE;
fail:
    Py_DECREF(v);
    return NULL;
}

static PyObject *view(PyObject *self, PyObject *arg) { return make_view(arg); }

static PyObject *View_index(ViewObject *self, void *unused)
{
    if (self->index == NULL) {
        PyObject *index = PyDict_New();
        if (index == NULL)
            return NULL;
        const char *data = PyBytes_AS_STRING(self->data);
        for (Py_ssize_t i = 0; i < self->filled; i++) {
            Field *f = &self->fields[i];
            PyObject *value = PyBytes_FromStringAndSize(data + f->at, f->n);
            if (value == NULL || PyDict_SetDefault(index, f->name, value) == NULL) {
                Py_XDECREF(value);
                Py_DECREF(index);
                return NULL;
            }
            Py_DECREF(value);
        }
        self->index = index;
    }
    Py_INCREF(self->index);
    return self->index;
}

static PyObject *View_vias(ViewObject *self, void *unused)
{
    if (self->vias == NULL) {
        PyObject *vias = PyList_New(0);
        if (vias == NULL)
            return NULL;
        const char *data = PyBytes_AS_STRING(self->data);
        for (Py_ssize_t i = 0; i < self->filled; i++) {
            Field *f = &self->fields[i];
            if (f->slot != S_VIA)
                continue;
            PyObject *value = PyBytes_FromStringAndSize(data + f->at, f->n);
            if (value == NULL || PyList_Append(vias, value) < 0) {
                Py_XDECREF(value);
                Py_DECREF(vias);
                return NULL;
            }
            Py_DECREF(value);
        }
        self->vias = vias;
    }
    Py_INCREF(self->vias);
    return self->vias;
}

static PyObject *View_clean(ViewObject *self, void *unused) { Py_RETURN_TRUE; }

/* get(name, default=None): the first value of a canonical header name (dict.get on index). */
static PyObject *View_get(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "get(name: str, default=None)");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->filled; i++) {
        Field *f = &self->fields[i];
        if (f->name == args[0] || PyUnicode_Compare(f->name, args[0]) == 0)
            return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->data) + f->at, f->n);
    }
    PyObject *d = nargs == 2 ? args[1] : Py_None;
    Py_INCREF(d);
    return d;
}

/* reply(status, host, port, extra) -> bytes: build(index, vias, status, status_line, host,
 * port, extra, clean=True) without making index or vias. */
static PyObject *View_reply(ViewObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyLong_Check(args[0]) || !PyUnicode_Check(args[1]) ||
        !PyLong_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "reply(status: int, host: str, port: int, extra: bytes)");
        return NULL;
    }
    long status = PyLong_AsLong(args[0]);
    long port = PyLong_AsLong(args[2]);
    if ((status == -1 || port == -1) && PyErr_Occurred())
        return NULL;
    if (status < 100 || status >= 100 + N_STATUS) {
        PyErr_SetString(PyExc_ValueError, "status must be 100..699");
        return NULL;
    }
    PyObject *line = status_lines[status - 100];
    if (line == NULL) {
        line = PyObject_CallOneArg(status_line_of, args[0]);
        if (line == NULL)
            return NULL;
        if (!PyBytes_Check(line)) {
            Py_DECREF(line);
            PyErr_SetString(PyExc_TypeError, "status lines must be bytes");
            return NULL;
        }
        status_lines[status - 100] = line; /* kept for the life of the process */
    }
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(args[1], &hlen);
    if (host == NULL)
        return NULL;
    Span vias[MAX_HEADERS];
    Py_ssize_t nvias = 0;
    const char *data = PyBytes_AS_STRING(self->data);
    for (Py_ssize_t i = 0; i < self->filled && nvias < MAX_HEADERS; i++)
        if (self->fields[i].slot == S_VIA) {
            vias[nvias].p = data + self->fields[i].at;
            vias[nvias++].n = self->fields[i].n;
        }
    /* clean: view() refused any CR, LF or NUL in the head; the host is ours. */
    return answer_of(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), status, vias, nvias,
                     field_span(self, S_FROM), field_span(self, S_TO),
                     field_span(self, S_CALLID), field_span(self, S_CSEQ), host, hlen, port,
                     PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]),
                     0);
}

static PyMethodDef View_methods[] = {
    {"reply", (PyCFunction)(void (*)(void))View_reply, METH_FASTCALL,
     "reply(status, host, port, extra): the answer, formatted from the datagram"},
    {"get", (PyCFunction)(void (*)(void))View_get, METH_FASTCALL,
     "get(name, default=None): the first value of a header (canonical name)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef View_members[] = {
    {"data", T_OBJECT, offsetof(ViewObject, data), READONLY, "the datagram"},
    {"method", T_OBJECT, offsetof(ViewObject, method), READONLY, "the request's method"},
    {"prepared", T_OBJECT, offsetof(ViewObject, prepared), READONLY, "strategy.prepare()"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef View_getset[] = {
    {"index", (getter)View_index, NULL, "{canonical name: first value}", NULL},
    {"vias", (getter)View_vias, NULL, "[Via values]", NULL},
    {"clean", (getter)View_clean, NULL, "always True: no CR, LF or NUL in any value", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sipdeflect.decoy._cfast.View",
    .tp_basicsize = offsetof(ViewObject, fields),
    .tp_itemsize = sizeof(Field),
    .tp_dealloc = (destructor)View_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A plain request as offsets into its datagram (see view())",
    .tp_methods = View_methods,
    .tp_members = View_members,
    .tp_getset = View_getset,
};

/* fastpath.scan(data): view(data) as (method, index, vias). */
static PyObject *scan(PyObject *self, PyObject *arg)
{
    PyObject *v = make_view(arg);
    if (v == NULL || v == Py_None)
        return v;
    ViewObject *vo = (ViewObject *)v;
    PyObject *index = View_index(vo, NULL);
    PyObject *vias = index ? View_vias(vo, NULL) : NULL;
    PyObject *out = vias ? PyTuple_Pack(3, vo->method, index, vias) : NULL;
    Py_XDECREF(index);
    Py_XDECREF(vias);
    Py_DECREF(v);
    return out;
}

/* -- Batch: mmsg.Batch's recvmmsg/sendmmsg slots, with the per-message work in C ---------
 * Same layout and rules as mmsg.py (see its opening comment): n receive slots of 64 KiB
 * (an anonymous mapping, touched only as far as datagrams reach), 32-byte name and 64-byte
 * control slots; recv() blocks for one datagram (MSG_WAITFORONE) with the GIL released
 * and returns [(data, source, ancillary)], sources and ancillary data decoded by the
 * Python functions given (cached per distinct raw value, bounded); send() writes each
 * reply into its request's slot and sends it to that request's own sockaddr. */

#define B_MAX_DATAGRAM 65536
#define B_NAME_SIZE 32
#define B_CONTROL_SIZE 64
#define B_CACHE_CAP 65536

typedef struct {
    PyObject_HEAD
    int fd;
    int n;
    char *data;
    char *names;
    char *controls;
    struct iovec *iov, *siov;
    struct mmsghdr *hdrs, *shdrs;
    int *slot_of; /* packet index (of the last recv) -> receive slot */
    int nslots;
    PyObject *slots; /* the same as a list, for tests and mmsg.Batch's API */
    PyObject *names_view;
    PyObject *sources, *ancillary, *decode_sockaddr, *decode_control;
    Py_ssize_t send_errors, truncated;
} BatchObject;

static void Batch_dealloc(BatchObject *self)
{
    if (self->data != NULL && self->data != MAP_FAILED)
        munmap(self->data, (size_t)self->n * B_MAX_DATAGRAM);
    PyMem_Free(self->names);
    PyMem_Free(self->controls);
    PyMem_Free(self->iov);
    PyMem_Free(self->siov);
    PyMem_Free(self->hdrs);
    PyMem_Free(self->shdrs);
    PyMem_Free(self->slot_of);
    Py_XDECREF(self->slots);
    Py_XDECREF(self->names_view);
    Py_XDECREF(self->sources);
    Py_XDECREF(self->ancillary);
    Py_XDECREF(self->decode_sockaddr);
    Py_XDECREF(self->decode_control);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(BatchObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "n", "decode_sockaddr", "decode_control", NULL};
    int fd, n;
    PyObject *ds, *dc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOO", kwlist, &fd, &n, &ds, &dc))
        return -1;
    if (n < 1 || n > 1024 || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "need fd >= 0 and 1 <= n <= 1024");
        return -1;
    }
    if (self->data != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch is already initialised");
        return -1;
    }
    self->fd = fd;
    self->n = n;
    self->data = mmap(NULL, (size_t)n * B_MAX_DATAGRAM, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (self->data == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->names = PyMem_Calloc((size_t)n, B_NAME_SIZE);
    self->controls = PyMem_Calloc((size_t)n, B_CONTROL_SIZE);
    self->iov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    self->siov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    self->hdrs = PyMem_Calloc((size_t)n, sizeof(struct mmsghdr));
    self->shdrs = PyMem_Calloc((size_t)n, sizeof(struct mmsghdr));
    self->slot_of = PyMem_Calloc((size_t)n, sizeof(int));
    self->slots = PyList_New(0);
    self->sources = PyDict_New();
    self->ancillary = PyDict_New();
    if (!self->names || !self->controls || !self->iov || !self->siov || !self->hdrs ||
        !self->shdrs || !self->slot_of) {
        PyErr_NoMemory();
        return -1;
    }
    if (!self->slots || !self->sources || !self->ancillary)
        return -1;
    self->names_view = PyMemoryView_FromMemory(self->names, (Py_ssize_t)n * B_NAME_SIZE,
                                               PyBUF_WRITE);
    if (self->names_view == NULL)
        return -1;
    Py_INCREF(ds);
    Py_INCREF(dc);
    self->decode_sockaddr = ds;
    self->decode_control = dc;
    for (int i = 0; i < n; i++) {
        self->iov[i].iov_base = self->data + (size_t)i * B_MAX_DATAGRAM;
        self->iov[i].iov_len = B_MAX_DATAGRAM;
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        h->msg_name = self->names + (size_t)i * B_NAME_SIZE;
        h->msg_iov = &self->iov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->controls + (size_t)i * B_CONTROL_SIZE;
    }
    return 0;
}

/* cache[raw] or decode(raw), remembered (cleared when full). New reference. */
static PyObject *cached(PyObject *cache, PyObject *decode, const char *p, Py_ssize_t n)
{
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *got = PyDict_GetItemWithError(cache, raw);
    if (got != NULL) {
        Py_INCREF(got);
        Py_DECREF(raw);
        return got;
    }
    if (PyErr_Occurred() || (got = PyObject_CallOneArg(decode, raw)) == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    if (PyDict_GET_SIZE(cache) >= B_CACHE_CAP)
        PyDict_Clear(cache);
    int r = PyDict_SetItem(cache, raw, got);
    Py_DECREF(raw);
    if (r < 0) {
        Py_DECREF(got);
        return NULL;
    }
    return got;
}

static PyObject *Batch_recv(BatchObject *self, PyObject *unused)
{
    for (int i = 0; i < self->n; i++) {
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        h->msg_namelen = B_NAME_SIZE;
        h->msg_controllen = B_CONTROL_SIZE;
        h->msg_flags = 0;
    }
    int k;
    Py_BEGIN_ALLOW_THREADS
    k = recvmmsg(self->fd, self->hdrs, (unsigned int)self->n, MSG_WAITFORONE, NULL);
    Py_END_ALLOW_THREADS
    self->nslots = 0;
    if (PyList_SetSlice(self->slots, 0, PyList_GET_SIZE(self->slots), NULL) < 0)
        return NULL;
    if (k < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < k; i++) {
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        if (h->msg_flags & MSG_TRUNC) {
            self->truncated++;
            continue;
        }
        if (h->msg_namelen == 0) /* shutdown() wakes the call with an empty, nameless read */
            continue;
        Py_ssize_t namelen = h->msg_namelen > B_NAME_SIZE ? B_NAME_SIZE : h->msg_namelen;
        Py_ssize_t clen = h->msg_controllen > B_CONTROL_SIZE ? B_CONTROL_SIZE
                                                             : (Py_ssize_t)h->msg_controllen;
        Py_ssize_t size = self->hdrs[i].msg_len > B_MAX_DATAGRAM ? B_MAX_DATAGRAM
                                                                 : self->hdrs[i].msg_len;
        PyObject *src = cached(self->sources, self->decode_sockaddr, h->msg_name, namelen);
        PyObject *anc = src ? cached(self->ancillary, self->decode_control, h->msg_control, clen)
                            : NULL;
        PyObject *data =
            anc ? PyBytes_FromStringAndSize(self->data + (size_t)i * B_MAX_DATAGRAM, size) : NULL;
        PyObject *item = data ? PyTuple_Pack(3, data, src, anc) : NULL;
        PyObject *slot = item ? PyLong_FromLong(i) : NULL;
        int ok = slot != NULL && PyList_Append(out, item) == 0 &&
                 PyList_Append(self->slots, slot) == 0;
        Py_XDECREF(src);
        Py_XDECREF(anc);
        Py_XDECREF(data);
        Py_XDECREF(item);
        Py_XDECREF(slot);
        if (!ok) {
            Py_DECREF(out);
            return NULL;
        }
        self->slot_of[self->nslots++] = i;
    }
    return out;
}

static PyObject *Batch_send(BatchObject *self, PyObject *replies)
{
    PyObject *seq = PySequence_Fast(replies, "send() needs a sequence of (index, bytes)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    int count = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, j);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "send() needs (index, bytes) pairs");
            goto fail;
        }
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        if (i < 0)
            i += self->nslots; /* as list indexing does */
        if (i < 0 || i >= self->nslots) {
            PyErr_SetString(PyExc_IndexError, "no such packet in the last recv()");
            goto fail;
        }
        if (count >= self->n) {
            PyErr_SetString(PyExc_ValueError, "more replies than slots");
            goto fail;
        }
        int slot = self->slot_of[i];
        PyObject *b = PyTuple_GET_ITEM(pair, 1);
        Py_ssize_t size = PyBytes_GET_SIZE(b);
        if (size > B_MAX_DATAGRAM) {
            self->send_errors++;
            continue;
        }
        char *at = self->data + (size_t)slot * B_MAX_DATAGRAM;
        memcpy(at, PyBytes_AS_STRING(b), (size_t)size);
        self->siov[count].iov_base = at;
        self->siov[count].iov_len = (size_t)size;
        struct msghdr *h = &self->shdrs[count].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_name = self->names + (size_t)slot * B_NAME_SIZE;
        h->msg_namelen = self->hdrs[slot].msg_hdr.msg_namelen;
        h->msg_iov = &self->siov[count];
        h->msg_iovlen = 1;
        count++;
    }
    Py_DECREF(seq);
    long sent = 0;
    int done = 0;
    while (done < count) { /* each pass moves on by at least one message: bounded */
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg(self->fd, self->shdrs + done, (unsigned int)(count - done), 0);
        Py_END_ALLOW_THREADS
        if (r <= 0) { /* the message at `done` failed (errno): skip it, send the rest */
            self->send_errors++;
            done++;
        } else {
            sent += r;
            done += r;
        }
    }
    return PyLong_FromLong(sent);
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS, "mmsg.Batch.recv"},
    {"send", (PyCFunction)Batch_send, METH_O, "mmsg.Batch.send"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Batch_members[] = {
    {"fd", T_INT, offsetof(BatchObject, fd), READONLY, NULL},
    {"n", T_INT, offsetof(BatchObject, n), READONLY, NULL},
    {"send_errors", T_PYSSIZET, offsetof(BatchObject, send_errors), 0, NULL},
    {"truncated", T_PYSSIZET, offsetof(BatchObject, truncated), 0, NULL},
    {"slots", T_OBJECT, offsetof(BatchObject, slots), READONLY, NULL},
    {"names", T_OBJECT, offsetof(BatchObject, names_view), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sipdeflect.decoy._cfast.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "mmsg.Batch with the per-message work in C (see mmsg.py)",
    .tp_methods = Batch_methods,
    .tp_members = Batch_members,
    .tp_init = (initproc)Batch_init,
    .tp_new = PyType_GenericNew,
};

/* configure(names, canonical_name, SipParseError, methods, mandatory, method_class,
 *           unknown_class, probe_tag, status_line): the SIP core's and the strategy's tables. */
static PyObject *configure(PyObject *self, PyObject *args)
{
    PyObject *n, *c, *e, *m, *req, *mc, *uc, *tag, *sl;
    if (!PyArg_ParseTuple(args, "O!OOO!O!O!O!O!O", &PyDict_Type, &n, &c, &e, &PyDict_Type, &m,
                          &PyTuple_Type, &req, &PyDict_Type, &mc, &PyUnicode_Type, &uc,
                          &PyBytes_Type, &tag, &sl))
        return NULL;
    if (PyTuple_GET_SIZE(req) > N_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many mandatory header names");
        return NULL;
    }
    int slots[N_SLOTS];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(req); i++) {
        slots[i] = slot_of(PyTuple_GET_ITEM(req, i));
        if (slots[i] < 0) {
            PyErr_Format(PyExc_ValueError, "mandatory header %R has no slot in _cfast.c",
                         PyTuple_GET_ITEM(req, i));
            return NULL;
        }
    }
    if (PyBytes_GET_SIZE(tag) == 0) {
        PyErr_SetString(PyExc_ValueError, "the probe tag must not be empty");
        return NULL;
    }
    PyObject *objs[] = {n, c, e, m, req, mc, uc, tag, sl};
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++)
        Py_INCREF(objs[i]);
    Py_XSETREF(names_cache, n);
    Py_XSETREF(canonical, c);
    Py_XSETREF(parse_error, e);
    Py_XSETREF(methods, m);
    Py_XSETREF(mandatory, req);
    Py_XSETREF(method_class, mc);
    Py_XSETREF(unknown_class, uc);
    Py_XSETREF(probe_tag, tag);
    Py_XSETREF(status_line_of, sl);
    for (int i = 0; i < N_STATUS; i++)
        Py_CLEAR(status_lines[i]);
    memcpy(mandatory_slots, slots, sizeof slots);
    n_mandatory = (int)PyTuple_GET_SIZE(req);
    Py_RETURN_NONE;
}

static PyMethodDef cfast_methods[] = {
    {"scan", scan, METH_O, "fastpath.scan(data) in C"},
    {"view", view, METH_O, "a View of a plain request, or None (scan() would defer)"},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL, "fastpath.build core in C"},
    {"configure", configure, METH_VARARGS, "hand over the SIP core's tables"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cfast_module = {
    PyModuleDef_HEAD_INIT, "_cfast", "The decoy's scan/build in C (see fastpath.py).", -1,
    cfast_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cfast(void)
{
    crc_init();
    s_via = PyUnicode_InternFromString("via");
    s_to = PyUnicode_InternFromString("to");
    s_from = PyUnicode_InternFromString("from");
    s_callid = PyUnicode_InternFromString("call-id");
    s_cseq = PyUnicode_InternFromString("cseq");
    s_clen = PyUnicode_InternFromString("content-length");
    if (!s_via || !s_to || !s_from || !s_callid || !s_cseq || !s_clen)
        return NULL;
    for (int i = 0; i < N_SLOTS; i++)
        if ((slot_names[i] = PyUnicode_InternFromString(SLOT_NAMES[i])) == NULL)
            return NULL;
    for (size_t i = 0; i < N_COMMON; i++) {
        common_len[i] = (Py_ssize_t)strlen(COMMON[i][0]);
        common_names[i] = PyUnicode_InternFromString(COMMON[i][1]);
        if (common_names[i] == NULL)
            return NULL;
        common_slot[i] = slot_of(common_names[i]);
    }
    if (PyType_Ready(&BatchType) < 0 || PyType_Ready(&ViewType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cfast_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    Py_INCREF(&ViewType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddObject(m, "View", (PyObject *)&ViewType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
