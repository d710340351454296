/*
 * telemetry.h - public API of libtelemetry.so.4, the telemetrics probe library.
 *
 * A probe creates a record, sets its payload, sends it to the local telemprobd
 * daemon and frees it:
 *
 *     struct telem_ref *ref = NULL;
 *     char class[] = "org.example/myprobe/event";
 *     char payload[] = "hello\n";
 *     if (tm_create_record(&ref, 1, class, 1) == 0) {
 *             if (tm_set_payload(ref, payload) == 0)
 *                     (void)tm_send_record(ref);
 *     }
 *     tm_free_record(ref);
 *
 * Every function returns 0 on success or a negative errno-style value (see each
 * function); none of them ever exits or aborts the calling process, raises SIGPIPE,
 * or blocks for more than about one second. Every pointer argument may be NULL
 * (the function then fails with -EINVAL, or -1 for tm_set_event_id).
 *
 * The library is not thread safe: the configuration file setting is process-wide.
 *
 * Build with: cc prog.c $(pkg-config --cflags --libs libtelemetry)
 */

#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A handle to one record, returned by tm_create_record(). */
struct telem_ref {
        struct telem_record *record;
};

#ifdef TELEMETRY_RECORD_LAYOUT
/*
 * The record layout, for C code that reads the headers directly (define
 * TELEMETRY_RECORD_LAYOUT before including this header). Read-only for callers:
 * change a record only through the tm_* functions.
 *
 * headers[i] is the NUL-terminated text "name: value\n" of header i, in wire order:
 * record_format_version, classification, severity, machine_id, creation_timestamp,
 * arch, host_type, build, kernel_version, payload_format_version, system_name,
 * board_name, cpu_model, bios_version, event_id. header_size is the total length of
 * the 15 strings. payload is NULL until tm_set_payload() succeeds, then a
 * NUL-terminated copy of payload_size bytes.
 */
#define TM_NUM_HEADERS 15
struct telem_record {
        char *headers[TM_NUM_HEADERS];
        char *payload;
        size_t header_size;
        size_t payload_size;
};
#endif

/**
 * Use another configuration file than the default one (only its socket_path matters
 * to the library; the path is also passed on to the daemon with every record).
 * The file is read when a record is first sent, not here.
 *
 * @param c_file Absolute path of an existing regular file.
 *
 * @return 0; -EINVAL for NULL, a relative path or not a regular file; the negative
 *     errno of stat(2) otherwise (e.g. -ENOENT, -EACCES).
 */
int tm_set_config_file(const char *c_file);

/**
 * Create a new telemetrics record.
 *
 * @param t_ref Where to store the new handle. Set to NULL when the call fails.
 * @param severity 1 (lowest) to 4 (highest); other values are clamped to 1 or 4.
 * @param classification "DOMAIN/PROBENAME/REST": exactly two '/', at most 122
 *     bytes, segments of at most 41, 40 and 40 bytes.
 * @param payload_version Payload format version; 1 means free-form text.
 *
 * @return 0; -EINVAL for NULL pointers or an invalid classification; -EIO on an
 *     internal error.
 */
int tm_create_record(struct telem_ref **t_ref, uint32_t severity,
                     char *classification, uint32_t payload_version);

/**
 * Replace the record's random event id.
 *
 * @param event_id Exactly 32 characters of [0-9a-f].
 *
 * @return 0; -1 for a NULL handle or id, or an invalid id (the header is then
 *     unchanged).
 */
int tm_set_event_id(struct telem_ref *t_ref, char *event_id);

/**
 * Set the record's payload (a copy is kept; a second call replaces the first).
 *
 * @param payload NUL-terminated text; only the first 8192 bytes are used. Every byte
 *     must be printable or white space (UTF-8 text is accepted).
 *
 * @return 0; -EINVAL for NULL pointers or a byte that is neither printable nor
 *     white space.
 */
int tm_set_payload(struct telem_ref *t_ref, char *payload);

/**
 * Send the record to telemprobd over its Unix socket (socket_path of the
 * configuration) and wait, at most about one second in all, for its reply.
 *
 * @return 0 when the daemon accepted the record, closed the connection after reading
 *     it (as older daemons do), or did not reply in time after the whole record was
 *     written; -ECONNREFUSED when the host is not opted in (nothing is sent) or no
 *     daemon listens; -ENOENT when the socket does not exist; -ETIMEDOUT when the record
 *     could not be handed over in time; -EPIPE or -ECONNRESET when the daemon went away;
 *     -EINVAL when the daemon rejected the record or the configuration file cannot be
 *     parsed; -EAGAIN when the daemon is overloaded; another negative errno otherwise.
 */
int tm_send_record(struct telem_ref *t_ref);

/**
 * Whether telemetry is enabled on this host (/etc/telemetrics/opt-in exists).
 *
 * @return 1 if opted in, else 0.
 */
int tm_is_opted_in(void);

/**
 * Release a record. NULL is accepted. Do not use the handle afterwards.
 */
void tm_free_record(struct telem_ref *t_ref);

#ifdef __cplusplus
}
#endif
