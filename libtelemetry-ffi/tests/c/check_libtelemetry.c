/* The check_libtelemetry cases of the C test suite, reading ref->record->headers[]
 * directly. TAP output; the exit status is the number of failures. */
#define TELEMETRY_RECORD_LAYOUT
#include <errno.h>
#include <stdio.h>
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

int main(void)
{
        struct telem_ref *ref = NULL;
        char ttt[] = "t/t/t", tt[] = "t/t", tttt[] = "t/t/t/t";
        char good_id[] = "aaaaaa00000033333344444466666622";
        char upper_id[] = "aaaaaa000000333333444444666666ZZ";
        char short_id[] = "aaaa";
        char zeros[44];
        char before[64];
        int rc;

        memset(zeros, '0', 43);
        zeros[43] = '\0';

        rc = tm_create_record(&ref, 1, ttt, 2000);
        ok(rc == 0 && ref != NULL && ref->record != NULL, "record created");
        if (ref == NULL)
                return 1;
        ok(ref->record->header_size > 0, "header_size > 0");
        ok(strcmp(ref->record->headers[2], "severity: 1\n") == 0, "severity header");
        ok(strcmp(ref->record->headers[1], "classification: t/t/t\n") == 0, "classification header");
        ok(strcmp(ref->record->headers[9], "payload_format_version: 2000\n") == 0,
           "payload_format_version header");
        ok(strcmp(ref->record->headers[0], "record_format_version: 4\n") == 0, "record_format_version");
        ok(strcmp(ref->record->headers[3], "machine_id: FFFFFFFF\n") == 0, "placeholder machine id");
        ok(strncmp(ref->record->headers[14], "event_id: ", 10) == 0
           && strlen(ref->record->headers[14]) == 10 + 32 + 1, "random event id");

        {
                size_t sum = 0;
                int i;
                for (i = 0; i < TM_NUM_HEADERS; i++)
                        sum += strlen(ref->record->headers[i]);
                ok(sum == ref->record->header_size, "header_size is the sum of the lines");
        }

        rc = tm_is_opted_in();
        ok(rc == 0 || rc == 1, "tm_is_opted_in is 0 or 1");

        /* Event id */
        strcpy(before, ref->record->headers[14]);
        ok(strcmp(before, "event_id: aaaaaa00000033333344444466666622\n") != 0, "random id differs");
        ok(tm_set_event_id(ref, upper_id) == -1, "non-hex event id refused");
        ok(strcmp(ref->record->headers[14], before) == 0, "header unchanged after non-hex id");
        ok(tm_set_event_id(ref, NULL) == -1, "NULL event id refused");
        ok(tm_set_event_id(ref, short_id) == -1, "short event id refused");
        ok(tm_set_event_id(ref, zeros) == -1, "43 zeros refused");
        ok(strcmp(ref->record->headers[14], before) == 0, "header unchanged after refusals");
        ok(tm_set_event_id(ref, good_id) == 0, "valid event id set");
        ok(strcmp(ref->record->headers[14], "event_id: aaaaaa00000033333344444466666622\n") == 0,
           "event id header replaced");
        tm_free_record(ref);
        ref = NULL;

        /* Classification */
        ok(tm_create_record(&ref, 1, tt, 1) == -EINVAL && ref == NULL, "t/t refused");
        ok(tm_create_record(&ref, 1, tttt, 1) == -EINVAL && ref == NULL, "t/t/t/t refused");

        /* Severity clamping */
        ok(tm_create_record(&ref, 0, ttt, 1) == 0
           && strcmp(ref->record->headers[2], "severity: 1\n") == 0, "severity 0 -> 1");
        tm_free_record(ref);
        ok(tm_create_record(&ref, 5, ttt, 1) == 0
           && strcmp(ref->record->headers[2], "severity: 4\n") == 0, "severity 5 -> 4");
        tm_free_record(ref);

        printf("1..%d\n", test_no);
        return failures;
}
