// Subcommands implemented outside blasst_main.cpp.
#pragma once

namespace blasst::cli {

int cmd_bench(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);

}  // namespace blasst::cli
