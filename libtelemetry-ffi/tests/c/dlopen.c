/* The mcelog pattern: dlopen the library by its full name, look up the functions with
 * dlsym (and their versions with dlvsym), create and send one record.
 * Usage: dlopen PATH/libtelemetry.so.4
 * Prints "send=<rc>"; exit status 0 when every lookup worked. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

struct telem_ref;

typedef int (*create_fn)(struct telem_ref **, uint32_t, char *, uint32_t);
typedef int (*payload_fn)(struct telem_ref *, char *);
typedef int (*send_fn)(struct telem_ref *);
typedef void (*free_fn)(struct telem_ref *);

static const char *const versioned[][2] = {
        { "tm_set_config_file", "TM_1_0_0" },
        { "tm_free_record", "TM_2_0_0" },
        { "tm_create_record", "TM_3_0_0" },
        { "tm_set_payload", "TM_3_0_0" },
        { "tm_send_record", "TM_3_0_0" },
        { "tm_set_event_id", "TM_4_0_0" },
        { "tm_is_opted_in", "TM_4_1_0" },
};

int main(int argc, char **argv)
{
        void *handle;
        create_fn create;
        payload_fn payload;
        send_fn send;
        free_fn release;
        struct telem_ref *ref = NULL;
        char cls[] = "org.clearlinux/mce/x86_64";
        char text[] = "MCE payload\n";
        size_t i;
        int rc;

        if (argc < 2)
                return 100;
        handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
                printf("dlopen: %s\n", dlerror());
                return 1;
        }
        for (i = 0; i < sizeof(versioned) / sizeof(versioned[0]); i++) {
                if (dlvsym(handle, versioned[i][0], versioned[i][1]) == NULL) {
                        printf("dlvsym %s@%s: %s\n", versioned[i][0], versioned[i][1], dlerror());
                        return 2;
                }
        }
        if (dlsym(handle, "tm_not_a_symbol") != NULL)
                return 3;
        *(void **)(&create) = dlsym(handle, "tm_create_record");
        *(void **)(&payload) = dlsym(handle, "tm_set_payload");
        *(void **)(&send) = dlsym(handle, "tm_send_record");
        *(void **)(&release) = dlsym(handle, "tm_free_record");
        if (!create || !payload || !send || !release) {
                printf("dlsym: %s\n", dlerror());
                return 4;
        }
        rc = create(&ref, 2, cls, 1);
        if (rc != 0 || payload(ref, text) != 0)
                return 5;
        printf("send=%d\n", send(ref));
        release(ref);
        dlclose(handle);
        return 0;
}
