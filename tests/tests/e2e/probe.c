/* A C probe for the end-to-end tests: one record through libtelemetry.so.4.
 * Usage: probe EVENT_ID PAYLOAD
 * Prints "rc=<tm_send_record result>". */
#include <stdio.h>

#include "telemetry.h"

int main(int argc, char **argv)
{
        char classification[] = "org.test/e2e/c-probe";
        struct telem_ref *ref = NULL;
        int rc;

        if (argc != 3) {
                fprintf(stderr, "usage: probe EVENT_ID PAYLOAD\n");
                return 2;
        }
        rc = tm_create_record(&ref, 3, classification, 1);
        if (rc != 0) {
                printf("create=%d\n", rc);
                return 3;
        }
        if (tm_set_event_id(ref, argv[1]) != 0 || tm_set_payload(ref, argv[2]) != 0) {
                printf("set failed\n");
                tm_free_record(ref);
                return 4;
        }
        rc = tm_send_record(ref);
        printf("rc=%d\n", rc);
        tm_free_record(ref);
        return rc == 0 ? 0 : 1;
}
