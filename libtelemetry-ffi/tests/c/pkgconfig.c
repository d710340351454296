/* Uses only the documented API; built with $(pkg-config --cflags --libs libtelemetry). */
#include <stdio.h>

#include <telemetry.h>

int main(void)
{
        struct telem_ref *ref = NULL;
        char cls[] = "org.example/pkgconfig/test";
        char payload[] = "built with pkg-config\n";
        int rc = tm_create_record(&ref, 1, cls, 1);

        if (rc == 0)
                rc = tm_set_payload(ref, payload);
        tm_free_record(ref);
        printf("rc=%d opted_in=%d\n", rc, tm_is_opted_in());
        return rc == 0 ? 0 : 1;
}
