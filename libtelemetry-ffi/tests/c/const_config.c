/* A caller written against the C telemetrics-client header (2.1.0 and later), where
 * tm_set_config_file takes a const char *: passing a string constant or a const pointer, and
 * taking the function's address with that exact type, must compile without a warning as C
 * and as C++.
 * Usage: const_config PATH  (prints "rc=<tm_set_config_file(PATH)>") */
#include <stdio.h>

#include "telemetry.h"

int main(int argc, char **argv)
{
        int (*set_config)(const char *) = tm_set_config_file;
        const char *path = "/nonexistent/telemetrics.conf";
        int rc;

        if (argc > 1) {
                path = argv[1];
        }
        rc = tm_set_config_file("relative/telemetrics.conf");
        if (rc >= 0) {
                printf("relative path accepted: %d\n", rc);
                return 1;
        }
        printf("rc=%d\n", set_config(path));
        return 0;
}
