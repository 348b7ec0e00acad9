/* libFuzzer target: image decoding for `kiln run` (stb_image through kiln's loader, with its resize to
 * a model's input size). Seeds in tests/fuzz/corpus/image. */
#include <stdlib.h>

#include "fuzz_input.h"
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("image.png", data, size);
    int64_t channels[] = {1, 3}, sizes[][2] = {{-1, -1}, {28, 28}};
    for (int c = 0; c < 2; c++)
        for (int s = 0; s < 2; s++) {
            int64_t height = sizes[s][0], width = sizes[s][1];
            float *pixels;
            if (cli_image_load(path, channels[c], &height, &width, &pixels) == KILN_OK)
                free(pixels);
        }
    return 0;
}
