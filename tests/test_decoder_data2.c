// The second half of the shared videos for test_decoder_data.c (see there).
#define SHARD 1
#include "tests/test_decoder_data.c"
