/* Images for `kiln run`: PNG and JPEG files decoded with stb_image (Debian libstb-dev) into a model's
 * image input. Decoding lives in the CLI only; the runtime library reads no image format. */
#ifndef KILN_CLI_IMAGE_H
#define KILN_CLI_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/kiln.h"

/* Whether this kiln was built with an image decoder. */
bool cli_image_supported(void);

/* Decodes the image at `path` into one (channels, height, width) sample with values in [0, 1]: luma for
 * 1 channel, gray + alpha for 2, RGB for 3, RGBA for 4. *height and *width give the size wanted, or -1
 * for the image's own, and return the size written; an image of another size is resized bilinearly
 * (pixel centres aligned, no antialiasing). *pixels is malloc'ed (free() it). */
kiln_status cli_image_load(const char *path, int64_t channels, int64_t *height, int64_t *width, float **pixels);

#endif
