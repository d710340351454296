/* The classic probe: create -> set payload -> send -> free, COUNT times.
 * Usage: sample CONFIG|- PAYLOAD COUNT [EVENT_ID]
 * Prints "rc=<tm_send_record result>" per record and "ms=<elapsed>" at the end.
 * Compiled as C99 and as C++. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "telemetry.h"

static long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
        char classification[] = "org.example/sample/test";
        long start;
        int count, i, rc;

        if (argc < 4) {
                fprintf(stderr, "usage: sample CONFIG|- PAYLOAD COUNT [EVENT_ID]\n");
                return 2;
        }
        if (strcmp(argv[1], "-") != 0) {
                rc = tm_set_config_file(argv[1]);
                if (rc != 0) {
                        printf("config=%d\n", rc);
                        return 3;
                }
        }
        count = atoi(argv[3]);
        start = now_ms();
        for (i = 0; i < count; i++) {
                struct telem_ref *ref = NULL;
                rc = tm_create_record(&ref, 2, classification, 1);
                if (rc != 0) {
                        printf("create=%d\n", rc);
                        return 4;
                }
                if (argc > 4 && tm_set_event_id(ref, argv[4]) != 0) {
                        printf("event_id failed\n");
                        return 5;
                }
                rc = tm_set_payload(ref, argv[2]);
                if (rc != 0) {
                        printf("payload=%d\n", rc);
                        return 6;
                }
                printf("rc=%d\n", tm_send_record(ref));
                tm_free_record(ref);
        }
        printf("ms=%ld\n", now_ms() - start);
        return 0;
}
