# common/: errors, logging, counter-based RNG, configuration, image and array files.
LIBS += common
common_SRCS := $(wildcard common/*.c)
common_PKGS := inih libpng
common_DEBS := libinih-dev libpng-dev
DEBS += $(common_DEBS)
