#include "blasst/device.hpp"

namespace blasst {

BuildInfo build_info() {
  BuildInfo info;
  info.cuda_status = "built without CUDA";
  return info;
}

}  // namespace blasst
