// Reference: a plain single-thread z-buffer rasterizer, the speed anchor of benchmarks/raster.py.
//
// Same output as the library's rasterize(): face id, depth (camera z = clip w) and perspective-correct
// barycentrics per pixel, pixel centres at +0.5, y_ndc = -1 on row 0. Textbook method: perspective divide,
// bounding box, float edge functions, z-test on 1/w (screen-linear); faces with a vertex at w <= 0 are
// skipped (no clipping). No threads, no SIMD tricks, no gradients.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

// verts_clip [V,4] float32, faces [F,3] int64 -> (face_id [H,W] int64, depth [H,W] float32, bary [H,W,3] float32)
std::vector<torch::Tensor> zbuffer_ref(torch::Tensor verts_clip, torch::Tensor faces, int64_t H, int64_t W) {
  verts_clip = verts_clip.to(torch::kFloat32).contiguous();
  faces = faces.to(torch::kInt64).contiguous();
  const float* v = verts_clip.data_ptr<float>();
  const int64_t* f = faces.data_ptr<int64_t>();
  const int64_t F = faces.size(0);
  auto face_id = torch::full({H, W}, -1, torch::kInt64);
  auto depth = torch::zeros({H, W}, torch::kFloat32);
  auto bary = torch::zeros({H, W, 3}, torch::kFloat32);
  int64_t* ids = face_id.data_ptr<int64_t>();
  float* dep = depth.data_ptr<float>();
  float* bar = bary.data_ptr<float>();
  std::vector<float> inv_w_buf((size_t)(H * W), 0.0f);  // 1/w, larger is nearer
  for (int64_t k = 0; k < F; ++k) {
    float sx[3], sy[3], iw[3];
    bool ok = true;
    for (int c = 0; c < 3; ++c) {
      const float* p = v + 4 * f[3 * k + c];
      if (!(p[3] > 0.0f)) ok = false;
      iw[c] = 1.0f / p[3];
      sx[c] = (p[0] * iw[c] + 1.0f) * 0.5f * (float)W;  // pixel units, centres at j + 0.5
      sy[c] = (p[1] * iw[c] + 1.0f) * 0.5f * (float)H;
    }
    if (!ok) continue;
    float area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0]);
    if (area == 0.0f) continue;
    float inv_area = 1.0f / area;
    int x0 = std::max(0, (int)std::floor(std::min({sx[0], sx[1], sx[2]}) - 0.5f));
    int x1 = std::min((int)W - 1, (int)std::ceil(std::max({sx[0], sx[1], sx[2]}) - 0.5f));
    int y0 = std::max(0, (int)std::floor(std::min({sy[0], sy[1], sy[2]}) - 0.5f));
    int y1 = std::min((int)H - 1, (int)std::ceil(std::max({sy[0], sy[1], sy[2]}) - 0.5f));
    for (int i = y0; i <= y1; ++i) {
      float py = i + 0.5f;
      for (int j = x0; j <= x1; ++j) {
        float px = j + 0.5f;
        float b0 = ((sx[1] - px) * (sy[2] - py) - (sx[2] - px) * (sy[1] - py)) * inv_area;
        float b1 = ((sx[2] - px) * (sy[0] - py) - (sx[0] - px) * (sy[2] - py)) * inv_area;
        float b2 = 1.0f - b0 - b1;
        if (b0 < 0.0f || b1 < 0.0f || b2 < 0.0f) continue;
        float inv_w = b0 * iw[0] + b1 * iw[1] + b2 * iw[2];
        int64_t p = i * W + j;
        if (inv_w <= inv_w_buf[p]) continue;
        inv_w_buf[p] = inv_w;
        ids[p] = k;
        float w = 1.0f / inv_w;
        dep[p] = w;
        bar[3 * p + 0] = b0 * iw[0] * w;
        bar[3 * p + 1] = b1 * iw[1] * w;
        bar[3 * p + 2] = b2 * iw[2] * w;
      }
    }
  }
  return {face_id, depth, bary};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("zbuffer_ref", &zbuffer_ref, "single-thread z-buffer reference"); }
