/* The Clear Linux telemetrics tutorial's example probe, compiled in the system test with
 * exactly "gcc test.c -ltelemetry -o test_telem". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <telemetry.h>

int main(int argc, char **argv)
{
        uint32_t severity = 1;
        uint32_t payload_version = 1;
        char classification[30] = "org.clearlinux/hello/world";
        struct telem_ref *tm_handle = NULL;
        char *payload;
        int ret = 0;

        (void)argc;
        (void)argv;
        if (asprintf(&payload, "hello\n") < 0) {
                return 1;
        }
        if ((ret = tm_create_record(&tm_handle, severity, classification, payload_version)) < 0) {
                printf("Failed to create record: %s\n", strerror(-ret));
                ret = 1;
                goto fail;
        }
        if ((ret = tm_set_payload(tm_handle, payload)) < 0) {
                printf("Failed to set record payload: %s\n", strerror(-ret));
                ret = 1;
                goto fail;
        }
        free(payload);
        payload = NULL;
        if ((ret = tm_send_record(tm_handle)) < 0) {
                printf("Failed to send record to daemon: %s\n", strerror(-ret));
                ret = 1;
                goto fail;
        }
        printf("Successfully sent record to daemon.\n");
        ret = 0;
fail:
        free(payload);
        tm_free_record(tm_handle);
        tm_handle = NULL;
        return ret;
}
