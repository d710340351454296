/* Every function fed NULL or invalid input returns a negative errno (-1 for
 * tm_set_event_id, as documented) and the process survives.
 * Usage: errors DIRECTORY   (an existing directory, not a regular file)
 * TAP output; the exit status is the number of failures. */
#define TELEMETRY_RECORD_LAYOUT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry.h"

static int test_no, failures;

static void ok(int cond, const char *what)
{
        test_no++;
        if (!cond)
                failures++;
        printf("%sok %d - %s\n", cond ? "" : "not ", test_no, what);
}

int main(int argc, char **argv)
{
        struct telem_ref *ref = NULL;
        struct telem_ref empty;
        char cls[] = "a/b/c", bad_cls[] = "a/b", empty_cls[] = "";
        char rel[] = "relative.conf", missing[] = "/nonexistent/dir/telemetrics.conf";
        char newline[] = "/etc/telemetrics/a\nb.conf";
        char bell[] = "bell\a", ok_payload[] = "fine payload\n";
        char id[] = "0123456789abcdef0123456789abcdef";
        char *big;
        int rc;

        if (argc < 2)
                return 100;
        empty.record = NULL;

        ok(tm_set_config_file(NULL) == -EINVAL, "config: NULL");
        ok(tm_set_config_file(rel) == -EINVAL, "config: relative path");
        ok(tm_set_config_file(missing) == -ENOENT, "config: missing file");
        ok(tm_set_config_file(argv[1]) == -EINVAL, "config: a directory");
        ok(tm_set_config_file(newline) == -EINVAL, "config: a control character");

        ok(tm_create_record(NULL, 1, cls, 1) == -EINVAL, "create: NULL t_ref");
        ref = &empty;
        ok(tm_create_record(&ref, 1, NULL, 1) == -EINVAL && ref == NULL,
           "create: NULL classification, *t_ref set to NULL");
        ref = &empty;
        ok(tm_create_record(&ref, 1, bad_cls, 1) == -EINVAL && ref == NULL,
           "create: bad classification, *t_ref set to NULL");
        ok(tm_create_record(&ref, 1, empty_cls, 1) == -EINVAL && ref == NULL,
           "create: empty classification");

        ok(tm_set_payload(NULL, ok_payload) == -EINVAL, "payload: NULL t_ref");
        ok(tm_set_payload(&empty, ok_payload) == -EINVAL, "payload: NULL record");
        ok(tm_set_event_id(NULL, id) == -1, "event id: NULL t_ref");
        ok(tm_set_event_id(&empty, id) == -1, "event id: NULL record");
        ok(tm_send_record(NULL) == -EINVAL, "send: NULL t_ref");
        ok(tm_send_record(&empty) == -EINVAL, "send: NULL record");
        tm_free_record(NULL);
        ok(1, "free: NULL");

        rc = tm_create_record(&ref, 1, cls, 1);
        ok(rc == 0 && ref != NULL, "create: valid");
        if (ref == NULL)
                return failures + 1;
        ok(ref->record->payload == NULL && ref->record->payload_size == 0, "no payload yet");
        ok(tm_set_payload(ref, NULL) == -EINVAL, "payload: NULL payload");
        ok(tm_set_payload(ref, bell) == -EINVAL, "payload: control character");
        ok(ref->record->payload == NULL, "payload unchanged after refusal");
        ok(tm_set_payload(ref, ok_payload) == 0
           && strcmp(ref->record->payload, ok_payload) == 0, "payload: valid");
        big = (char *)malloc(10001);
        if (big == NULL)
                return failures + 1;
        memset(big, 'x', 10000);
        big[10000] = '\0';
        ok(tm_set_payload(ref, big) == 0 && ref->record->payload_size == 8192
           && strlen(ref->record->payload) == 8192, "payload: cut to 8192 bytes");
        free(big);
        ok(tm_set_payload(ref, ok_payload) == 0 && ref->record->payload_size == 13,
           "payload: replaced");
        tm_free_record(ref);

        printf("1..%d\n", test_no);
        return failures;
}
