// pipeline/curve.c — key files, admitted keys, the ZAP answer, handshake events (see curve.h).
#include "pipeline/curve.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include "common/io.h"

static const char z85_chars[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int vm_curve_z85_check(const char *text, size_t len, char *why, size_t cap) {
    if (len != VM_CURVE_Z85_LEN) {
        snprintf(why, cap, "has %zu characters, a CURVE key has %d (Z85)", len, VM_CURVE_Z85_LEN);
        return VM_EINVAL;
    }
    // Each group of 5 characters is a base-85 number that must fit 32 bits (libzmq would wrap it).
    for (size_t g = 0; g < len; g += 5) {
        uint64_t v = 0;
        for (size_t i = g; i < g + 5; i++) {
            const char *p = text[i] ? strchr(z85_chars, text[i]) : NULL;
            if (!p) {
                if ((unsigned char)text[i] >= 0x21 && (unsigned char)text[i] < 0x7f)
                    snprintf(why, cap, "character '%c' at position %zu is not Z85", text[i], i + 1);
                else
                    snprintf(why, cap, "byte 0x%02x at position %zu is not Z85", (unsigned char)text[i], i + 1);
                return VM_EINVAL;
            }
            v = v * 85 + (uint64_t)(p - z85_chars);
        }
        if (v > 0xffffffffull) {
            snprintf(why, cap, "characters %zu-%zu are not valid Z85 (the group exceeds 32 bits)", g + 1, g + 5);
            return VM_EINVAL;
        }
    }
    return 0;
}

// ---- key-file text ---------------------------------------------------------------------------------

// The next "name = value" entry of text from *pos on (comment and blank lines skipped), trimmed.
// 1 = entry (*lineno its line; *vlen the value's length, which may exceed what fits in value),
// 0 = end of text, -1 = a line that is not an entry (name = the start of the line).
static int next_entry(const char *text, size_t *pos, int *lineno, char *name, size_t ncap, char *value, size_t vcap,
                      size_t *vlen) {
    while (text[*pos]) {
        const char *line = text + *pos;
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        *pos += len + (nl ? 1 : 0);
        ++*lineno;
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
        while (len && (*line == ' ' || *line == '\t')) line++, len--;
        if (!len || *line == '#') continue;
        const char *eq = memchr(line, '=', len);
        if (!eq) {
            snprintf(name, ncap, "%.*s", (int)(len < 60 ? len : 60), line);
            return -1;
        }
        size_t nlen = (size_t)(eq - line), vl = len - nlen - 1;
        const char *v = eq + 1;
        while (nlen && (line[nlen - 1] == ' ' || line[nlen - 1] == '\t')) nlen--;
        while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
        snprintf(name, ncap, "%.*s", (int)(nlen < ncap - 1 ? nlen : ncap - 1), line);
        *vlen = vl;
        if (vl >= vcap) vl = vcap - 1;
        memcpy(value, v, vl);
        value[vl] = 0;
        return 1;
    }
    return 0;
}

static int check_value(const char *origin, int lineno, const char *name, const char *value, size_t vlen, vm_error *err) {
    char why[128];
    if (vm_curve_z85_check(value, vlen, why, sizeof why))
        return vm_fail(err, VM_EINVAL, "%s:%d: %s %s", origin, lineno, name, why);
    return 0;
}

int vm_curve_key_parse(const char *text, const char *origin, int need_secret, vm_curve_key *out, vm_error *err) {
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    int lineno = 0, have_pub = 0, have_sec = 0, k;
    char name[64], value[128];
    size_t vlen;
    while ((k = next_entry(text, &pos, &lineno, name, sizeof name, value, sizeof value, &vlen)) != 0) {
        if (k < 0)
            return vm_fail(err, VM_EINVAL, "%s:%d: '%s' is not an entry (expected public-key = KEY or secret-key = KEY)",
                           origin, lineno, name);
        int is_pub = !strcmp(name, "public-key"), is_sec = !strcmp(name, "secret-key");
        if (!is_pub && !is_sec)
            return vm_fail(err, VM_EINVAL, "%s:%d: unknown entry '%s' (expected public-key or secret-key)", origin,
                           lineno, name);
        if (is_pub ? have_pub : have_sec)
            return vm_fail(err, VM_EINVAL, "%s:%d: a second %s (one key pair per file)", origin, lineno, name);
        if (check_value(origin, lineno, name, value, vlen, err)) return VM_EINVAL;
        memcpy(is_pub ? out->pub : out->sec, value, VM_CURVE_Z85_LEN + 1);
        if (is_pub) have_pub = 1;
        else have_sec = 1;
    }
    if (!have_pub) return vm_fail(err, VM_EINVAL, "%s: no public-key line (not a key file from `vicmae keygen`?)", origin);
    if (need_secret && !have_sec)
        return vm_fail(err, VM_EINVAL, "%s: no secret-key line: this is a public key; give the .key_secret file of "
                       "`vicmae keygen`", origin);
    if (have_sec) {
        char derived[VM_CURVE_Z85_LEN + 1];
        if (zmq_curve_public(derived, out->sec) != 0)
            return vm_fail(err, VM_EUNSUPPORTED, "%s: cannot derive the public key: %s (libzmq without CURVE?)", origin,
                           zmq_strerror(zmq_errno()));
        if (strcmp(derived, out->pub))
            return vm_fail(err, VM_EINVAL, "%s: public-key does not belong to secret-key (an edited file?)", origin);
    }
    return 0;
}

// The whole of a small text file (at most max bytes) into a malloc'ed string, read to its end from fd:
// a clients file may be a pipe (curve_clients = <(cat worker*.key)), which vm_read_file refuses.
static int read_text(int fd, const char *path, size_t max, char **out, vm_error *err) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > max) {
                free(buf);
                return vm_fail(err, VM_EINVAL, "%s: larger than %zu bytes: not a key file", path, max);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); return vm_fail(err, VM_ENOMEM, "%s: out of memory", path); }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return vm_fail(err, VM_EIO, "%s: %s", path, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    if (memchr(buf, 0, len)) {
        free(buf);
        return vm_fail(err, VM_EINVAL, "%s: binary content: not a key file", path);
    }
    *out = buf;
    return 0;
}

// A key file into *out, its secret key too when the file has one (whatever need_secret says).
static int load_key_file(const char *path, int need_secret, vm_curve_key *out, vm_error *err) {
    memset(out, 0, sizeof *out);
    const size_t max = 64 << 10;
    char *text;
    size_t len;
    unsigned mode;
    int rc = vm_read_file(path, max, VM_EINVAL, (void **)&text, &len, &mode, err);
    if (rc == VM_ERANGE) return vm_fail(err, VM_EINVAL, "%s: larger than %zu bytes: not a key file", path, max);
    if (rc) return rc;
    if (memchr(text, 0, len)) rc = vm_fail(err, VM_EINVAL, "%s: binary content: not a key file", path);
    if (!rc) rc = vm_curve_key_parse(text, path, need_secret, out, err);
    // The mode matters once the file is known to hold a secret: a public .key may be 0644.
    if (!rc && out->sec[0] && (mode & (S_IRWXG | S_IRWXO)))
        rc = vm_fail(err, VM_EINVAL, "%s: holds a secret key but group or others may read it (mode %04o); "
                     "run `chmod 600 %s`", path, mode & 07777, path);
    // The secret key lived in this buffer: wipe it before handing the memory back.
    memset(text, 0, len);
    free(text);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

int vm_curve_key_load(const char *path, int need_secret, vm_curve_key *out, vm_error *err) {
    int rc = load_key_file(path, need_secret, out, err);
    if (!rc && !need_secret) memset(out->sec, 0, sizeof out->sec);  // the caller asked for the public key only
    return rc;
}

int vm_curve_keygen(vm_curve_key *out, vm_error *err) {
    memset(out, 0, sizeof *out);
    if (!zmq_has("curve"))
        return vm_fail(err, VM_EUNSUPPORTED, "this libzmq was built without CURVE (zmq_has(\"curve\") = 0)");
    if (zmq_curve_keypair(out->pub, out->sec) != 0)
        return vm_fail(err, VM_EUNSUPPORTED, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    return 0;
}

static int write_new(const char *path, mode_t mode, const char *text, vm_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return vm_fail(err, errno == EEXIST ? VM_EINVAL : VM_EIO, "%s: %s%s", path, strerror(errno),
                       errno == ENOENT ? " (create its directory first)" : "");
    // The umask may only clear bits; fchmod makes the public file readable whatever it is.
    fchmod(fd, mode);
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return vm_fail(err, VM_EIO, "%s: %s", path, strerror(e));
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(path);
        return vm_fail(err, VM_EIO, "%s: %s", path, strerror(e));
    }
    return 0;
}

int vm_curve_key_write(const char *name, const vm_curve_key *k, char *pub_path, char *sec_path, size_t cap,
                       vm_error *err) {
    char pub[4096 + 16], sec[4096 + 16];
    if (!name[0] || strlen(name) > 4096) return vm_fail(err, VM_EINVAL, "keygen: bad name '%s'", name);
    snprintf(pub, sizeof pub, "%s.key", name);
    snprintf(sec, sizeof sec, "%s.key_secret", name);
    if (pub_path) snprintf(pub_path, cap, "%s", pub);
    if (sec_path) snprintf(sec_path, cap, "%s", sec);
    struct stat st;
    // Both checked first, so that a refusal writes nothing (O_EXCL below still guards a race).
    for (int i = 0; i < 2; i++)
        if (lstat(i ? sec : pub, &st) == 0)
            return vm_fail(err, VM_EINVAL, "%s exists: refusing to overwrite a key (remove it first, or pick another name)",
                           i ? sec : pub);
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    char text[1024];
    snprintf(text, sizeof text,
             "# vicmae CURVE key pair \"%s\" (vicmae keygen): SECRET, keep it on this host (mode 0600).\n"
             "# A trainer's: [pipeline] curve_secret_key = this file.  A worker's: vicmae worker --key this file.\n"
             "public-key = %s\nsecret-key = %s\n",
             base, k->pub, k->sec);
    int rc = write_new(sec, 0600, text, err);
    memset(text, 0, sizeof text);
    if (rc) return rc;
    snprintf(text, sizeof text,
             "# vicmae CURVE public key \"%s\" (vicmae keygen): safe to share.\n"
             "# A trainer's: the workers' --server-key.  A worker's: one of the trainer's [pipeline] curve_clients.\n"
             "public-key = %s\n",
             base, k->pub);
    if ((rc = write_new(pub, 0644, text, err))) unlink(sec);
    return rc;
}

// ---- admitted clients ----------------------------------------------------------------------------------

int vm_curve_clients_has(const vm_curve_clients *c, const uint8_t key[32]) {
    for (int i = 0; i < c->n; i++)
        if (!memcmp(c->keys[i], key, 32)) return 1;
    return 0;
}

int vm_curve_clients_add(vm_curve_clients *c, const char *z85, const char *origin, vm_error *err) {
    char why[128];
    if (vm_curve_z85_check(z85, strlen(z85), why, sizeof why))
        return vm_fail(err, VM_EINVAL, "%s: public key %s", origin, why);
    uint8_t key[32];
    if (!zmq_z85_decode(key, z85)) return vm_fail(err, VM_EINVAL, "%s: public key is not valid Z85", origin);
    if (vm_curve_clients_has(c, key)) return 0;
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 16;
        uint8_t(*k)[32] = realloc(c->keys, (size_t)nc * sizeof *k);
        if (!k) return vm_fail(err, VM_ENOMEM, "%s: out of memory", origin);
        c->keys = k;
        c->cap = nc;
    }
    memcpy(c->keys[c->n++], key, 32);
    return 0;
}

int vm_curve_clients_parse(vm_curve_clients *c, const char *text, const char *origin, vm_error *err) {
    size_t pos = 0;
    int lineno = 0, k;
    char name[64], value[128], where[1200];
    size_t vlen;
    while ((k = next_entry(text, &pos, &lineno, name, sizeof name, value, sizeof value, &vlen)) != 0) {
        if (k < 0)
            return vm_fail(err, VM_EINVAL, "%s:%d: '%s' is not an entry (expected public-key = KEY, one per admitted "
                           "worker)", origin, lineno, name);
        if (!strcmp(name, "secret-key"))
            return vm_fail(err, VM_EINVAL, "%s:%d: a secret key: the trainer admits workers by their public .key "
                           "file only (never copy a .key_secret)", origin, lineno);
        if (strcmp(name, "public-key"))
            return vm_fail(err, VM_EINVAL, "%s:%d: unknown entry '%s' (expected public-key = KEY)", origin, lineno, name);
        if (check_value(origin, lineno, name, value, vlen, err)) return VM_EINVAL;
        snprintf(where, sizeof where, "%s:%d", origin, lineno);
        if (vm_curve_clients_add(c, value, where, err)) return VM_EINVAL;
    }
    return 0;
}

static int is_key_file(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 4 && !strcmp(e->d_name + n - 4, ".key");
}
// By name in bytes (not alphasort's locale order): the first bad file named is the same every time.
static int names_cmp(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int load_dir(vm_curve_clients *c, const char *path, vm_error *err) {
    struct dirent **names;
    int n = scandir(path, &names, is_key_file, names_cmp), rc = 0;
    if (n < 0) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    for (int i = 0; i < n && !rc; i++) {
        char file[4096 + 512];
        snprintf(file, sizeof file, "%s/%s", path, names[i]->d_name);
        vm_curve_key k;
        if ((rc = load_key_file(file, 0, &k, err))) break;
        if (k.sec[0])  // a renamed .key_secret: refused, as a secret-key line in a clients file is
            rc = vm_fail(err, VM_EINVAL, "%s: holds a secret key: the trainer admits workers by their public .key "
                         "file only (never copy a .key_secret)", file);
        memset(k.sec, 0, sizeof k.sec);
        if (!rc) rc = vm_curve_clients_add(c, k.pub, file, err);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int vm_curve_clients_load(vm_curve_clients *c, const char *path, vm_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return load_dir(c, path, err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    char *text = NULL;
    int rc = read_text(fd, path, 16 << 20, &text, err);
    close(fd);
    if (rc) return rc;
    rc = vm_curve_clients_parse(c, text, path, err);
    free(text);
    return rc;
}

void vm_curve_clients_free(vm_curve_clients *c) {
    free(c->keys);
    *c = (vm_curve_clients){0};
}

// ---- ZAP (RFC 27) ----------------------------------------------------------------------------------------

int vm_curve_zap_serve(void *zap, const vm_curve_clients *c, vm_curve_zap_req *out) {
    memset(out, 0, sizeof *out);
    // Request: version, request id, domain, address, identity, mechanism, credentials...
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, zap, n ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (!n) return 0;
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 8) f[n++] = m;  // frames past the eighth are not part of a CURVE request: dropped
        else zmq_msg_close(&m);
    }
    const char *status = "500", *text = "malformed ZAP request";
    if (n >= 2 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3)) {
        if (n >= 4)
            snprintf(out->address, sizeof out->address, "%.*s", (int)zmq_msg_size(&f[3]), (char *)zmq_msg_data(&f[3]));
        if (n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) && zmq_msg_size(&f[6]) == 32) {
            zmq_z85_encode(out->key, zmq_msg_data(&f[6]), 32);
            out->admitted = vm_curve_clients_has(c, zmq_msg_data(&f[6]));
            status = out->admitted ? "200" : "400";
            text = out->admitted ? "OK" : "public key not admitted";
        } else if (n >= 6) {
            status = "400";
            text = "not a CURVE client";
        }
    }
    if (!out->admitted) snprintf(out->why, sizeof out->why, "%s", text);
    // Reply: version, request id, status code, status text, user id, metadata.  A request too short
    // to carry an id is answered with an empty one (libzmq then drops the connection).
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2) zmq_send(zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else zmq_send(zap, "", 0, ZMQ_SNDMORE);
    zmq_send(zap, status, 3, ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, out->admitted ? out->key : "", out->admitted ? VM_CURVE_Z85_LEN : 0, ZMQ_SNDMORE);
    zmq_send(zap, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    return 1;
}

// ---- handshake events ------------------------------------------------------------------------------------

void *vm_curve_monitor(void *ctx, void *sock, int events) {
    char name[64];
    snprintf(name, sizeof name, "inproc://vicmae-monitor-%p", sock);
    if (zmq_socket_monitor(sock, name, events) != 0) return NULL;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (!mon) return NULL;
    int linger = 0;
    zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(mon, name) != 0) {
        zmq_close(mon);
        return NULL;
    }
    return mon;
}

int vm_curve_monitor_next(void *mon, int *event, int *value) {
    // An event is two frames: 6 bytes (uint16 event, uint32 value, host order), then the endpoint.
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return 0;
    }
    int ok = zmq_msg_size(&a) >= 6;
    uint16_t ev = 0;
    uint32_t val = 0;
    if (ok) {
        memcpy(&ev, zmq_msg_data(&a), 2);
        memcpy(&val, (char *)zmq_msg_data(&a) + 2, 4);
    }
    while (zmq_msg_more(&a)) {
        zmq_msg_init(&b);
        zmq_msg_recv(&b, mon, 0);
        int m = zmq_msg_more(&b);
        zmq_msg_close(&b);
        if (!m) break;
    }
    zmq_msg_close(&a);
    *event = ev;
    *value = (int)val;
    return ok;
}

const char *vm_curve_protocol_error(int value) {
    switch ((unsigned)value) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: return "security mechanism mismatch (CURVE at one end only)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: return "cryptographic error (a message did not decrypt)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE: return "key exchange failed";
    case ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND: return "unexpected command";
    case ZMQ_PROTOCOL_ERROR_ZMTP_INVALID_SEQUENCE: return "invalid sequence";
    case ZMQ_PROTOCOL_ERROR_ZAP_UNSPECIFIED:
    case ZMQ_PROTOCOL_ERROR_ZAP_MALFORMED_REPLY:
    case ZMQ_PROTOCOL_ERROR_ZAP_BAD_REQUEST_ID:
    case ZMQ_PROTOCOL_ERROR_ZAP_BAD_VERSION:
    case ZMQ_PROTOCOL_ERROR_ZAP_INVALID_STATUS_CODE:
    case ZMQ_PROTOCOL_ERROR_ZAP_INVALID_METADATA: return "the trainer's key check (ZAP) failed";
    default:
        if (((unsigned)value & 0xff000000u) == ZMQ_PROTOCOL_ERROR_ZMTP_UNSPECIFIED) return "malformed handshake (ZMTP)";
        return "protocol error";
    }
}
